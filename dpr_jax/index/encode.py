"""Batched encoding of texts and offline encoding of a corpus into embedding shards.

:class:`TextEncoder` turns questions or passages into vectors: it tokenises once, sorts by token
length so each batch is padded only to a few bucket lengths (little compute spent on padding, few
jit compilations), splits every batch over this process's devices, and keeps one batch in flight
while the host prepares the next.

:func:`encode_corpus` streams a passages file (memory bounded by ``block_size``, whatever the corpus
size) and writes one shard per block of passages with :mod:`dpr_jax.index.store`. Block ``b`` belongs
to job ``b % N`` of ``--shard I/N``, so hosts or jobs split a corpus without coordinating; finished
shards are skipped on a rerun (resumable after a kill; the half-written temporaries a kill leaves
are removed when the job that owns them starts again), and ``meta.json`` is written by the job that
finds every shard done.
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
from typing import Callable, Iterable, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from dpr_jax import storage
from dpr_jax.data.passages import estimate_passage_count, read_passages
from dpr_jax.data.textfiles import read_json
from dpr_jax.errors import DprJaxError, InputError
from dpr_jax.index import store
from dpr_jax.index.id_check import check_unique_shard_ids
from dpr_jax.index.truncate import check_dim, truncate_vectors
from dpr_jax.mesh import data_sharding, make_local_mesh, replicate, round_up_to_devices
from dpr_jax.models.functional import SIDES, FunctionalModel
from dpr_jax.models.tokenizer import passage_inputs
from dpr_jax.storage import remove_stale_temporaries

SETTINGS_FILE = "encode-settings.json"
_TEMP_SHARD = re.compile(r"^\.shard-(\d{5,})\.")


def bucket_length(longest: int, max_length: int) -> int:
    """Padded length for a batch whose longest sequence is ``longest`` tokens.

    Multiples of 32 up to 128, of 64 above: at most ~10 shapes for 512 tokens, and at most 1/3 of a
    batch's positions wasted on padding once sequences are sorted by length.
    """
    step = 32 if longest <= 128 else 64
    return min(-(-longest // step) * step, max(max_length, longest))


class TextEncoder:
    """Encodes questions or passages with a loaded dual encoder over this process's devices."""

    def __init__(self, loaded, *, batch_size: int = 64, max_length: int = 256, mesh=None):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.mesh = mesh or make_local_mesh()
        self.num_devices = self.mesh.devices.size
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise DprJaxError("batch size must be at least 1")
        # the global batch is padded to a multiple of the device count so every device gets rows
        self.global_batch = round_up_to_devices(self.batch_size, self.mesh)
        self.max_length = int(max_length)
        fmodel, params = FunctionalModel.split(loaded.model)
        self.params = replicate(params, self.mesh)
        self._in_sharding = data_sharding(self.mesh)
        self._fns = {side: jax.jit(functools.partial(fmodel.encode, side=side)) for side in SIDES}

    @property
    def dim(self) -> int:
        return self.loaded.model.dim

    def encode_questions(self, questions: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        return self.encode("question", list(questions), progress)

    def encode_passages(self, titles: Sequence[str], texts: Sequence[str],
                        progress: Callable[[int], None] | None = None) -> np.ndarray:
        return self.encode("passage", passage_inputs(titles, texts), progress)

    def encode(self, side: str, inputs: list, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """float32 ``[len(inputs), dim]`` vectors, in input order."""
        out = np.zeros((len(inputs), self.dim), dtype=np.float32)
        if not inputs:
            return out
        encodings = self.tokenizer.encode_raw(inputs, self.max_length)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        fn = self._fns[side]
        pending = None  # (row indices, device array): one batch in flight while the next is prepared
        for start in range(0, len(order), self.global_batch):
            rows = order[start:start + self.global_batch]
            batch_encs = [encodings[i] for i in rows]
            length = bucket_length(max(len(e.ids) for e in batch_encs), self.max_length)
            arrays = self.tokenizer.pad(batch_encs, pad_to=length)
            if len(rows) < self.global_batch:  # pad the last batch with empty rows (one shape per bucket)
                arrays = {k: np.pad(v, ((0, self.global_batch - len(rows)), (0, 0))) for k, v in arrays.items()}
            result = fn(self.params, batch=jax.device_put(arrays, self._in_sharding))
            if pending is not None:
                self._collect(out, *pending, progress)
            pending = (rows, result)
        self._collect(out, *pending, progress)
        return out

    @staticmethod
    def _collect(out, rows, result, progress):
        out[rows] = np.asarray(result)[: len(rows)]
        if progress is not None:
            progress(len(rows))


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if not spec:
        return 0, 1
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise DprJaxError(f"--shard must look like I/N (e.g. 0/4), not {spec!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise DprJaxError(f"--shard {spec}: need 0 <= I < N")
    return i, n


def _blocks(passages: Iterable, block_size: int):
    it = iter(passages)
    for b in itertools.count():
        block = list(itertools.islice(it, block_size))
        if not block:
            return
        yield b, block


def encode_corpus(loaded, passages_path, out_dir, *, shard: tuple[int, int] = (0, 1), block_size: int = 100_000,
                  batch_size: int = 64, max_length: int = 256, out_dtype: str = "float16",
                  dim: int | None = None, progress: bool = True, mesh=None, encoder: TextEncoder | None = None) -> dict:
    """Encode ``passages_path`` into ``out_dir`` shards; returns a summary (count, shards written/skipped, meta or None).

    ``out_dtype``: how vectors are stored (:data:`dpr_jax.index.store.SUPPORTED_DTYPES`). ``dim``: keep
    only the first ``dim`` coordinates (Matryoshka truncation, :mod:`dpr_jax.index.truncate`);
    ``meta.json`` then says ``dim`` = ``dim`` and ``model_dim`` = the model's width. ``encoder``: a
    :class:`TextEncoder` of ``loaded`` to reuse (its compiled programs; its batch size and max length
    replace ``batch_size``/``max_length``), as the Python API's models keep one.
    """
    if out_dtype not in store.SUPPORTED_DTYPES:
        raise DprJaxError(f"--dtype must be one of {', '.join(store.SUPPORTED_DTYPES)}, not {out_dtype!r}")
    model_dim = loaded.model.dim
    dim = check_dim(dim, model_dim, f"the model makes {model_dim}-d vectors")
    normalize = bool(loaded.encoder_config.normalize)
    out_dir = storage.make_dirs(out_dir)  # for a URL: the bucket exists (a clear error before any work)
    job, num_jobs = shard
    # Open the input, recognise its format and read (and validate) its first block before anything is
    # written: a typo in the path or a bad file must not leave an encode-settings.json behind that
    # refuses the corrected rerun. Ids are not kept while streaming (flat memory at any corpus size):
    # they are checked on the finished shards' .ids files before meta.json is written (index.id_check).
    blocks = _blocks(read_passages(passages_path, check_duplicates=False), block_size)
    first = next(blocks, None)
    if first is None:
        raise InputError(passages_path, "no passages in the file: nothing to encode")
    if encoder is None:
        encoder = TextEncoder(loaded, batch_size=batch_size, max_length=max_length, mesh=mesh)
    elif encoder.loaded is not loaded:
        raise ValueError("encoder belongs to another model")
    max_length = encoder.max_length
    settings = {**loaded.describe(), "max_length": max_length, "dtype": out_dtype, "block_size": block_size,
                "passages": str(_absolute_resolved(passages_path)),
                "passages_fingerprint": storage.fingerprint(passages_path)}
    if dim < model_dim:  # only then, so indexes started before --dim existed resume unchanged
        settings.update(dim=dim, model_dim=model_dim)
    _check_settings(out_dir, settings)
    _remove_stale_temporaries(out_dir, job, num_jobs)

    total = estimate_passage_count(passages_path)
    bar = tqdm(total=total, unit="psg", desc=f"encode {job}/{num_jobs}", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    written, skipped, count = [], [], 0
    for b, block in itertools.chain([first], blocks):
        count += len(block)
        if b % num_jobs != job or store.shard_done(out_dir, b):
            (skipped.append(b) if b % num_jobs == job else None)
            bar.update(len(block))
            continue
        store.check_ids([p.id for p in block], str(passages_path))  # before the compute, not after it
        vectors = encoder.encode_passages([p.title for p in block], [p.text for p in block], progress=bar.update)
        vectors = _finite(b, truncate_vectors(vectors, dim, normalize), block, out_dtype)
        store.write_shard(out_dir, b, vectors, [p.id for p in block], dtype=out_dtype)
        written.append(b)
    bar.close()
    num_shards = -(-count // block_size)
    meta = None
    if all(store.shard_done(out_dir, b) for b in range(num_shards)):
        check_unique_shard_ids(out_dir, num_shards, expected=count, passages=passages_path, progress=progress)
        meta = {**settings, "count": count, "num_shards": num_shards, "dim": dim}
        store.write_meta(out_dir, **meta)
    return {"count": count, "written": written, "skipped": skipped, "num_shards": num_shards, "meta": meta}


def _absolute_resolved(path):
    """A local path made absolute with symlinks resolved; a URL as it is."""
    p = storage.as_path(path)
    return p if storage.is_remote(p) else p.resolve()


def _remove_stale_temporaries(out_dir, job: int, num_jobs: int) -> None:
    """Delete half-written shard files a killed run of this job left (``.shard-NNNNN.npy.XXXX.tmp``).

    Only this job's blocks (``b % num_jobs == job``): another job may be writing its own right now.
    """
    numbers = {int(m.group(1)) for p in out_dir.glob(".shard-*.tmp") if (m := _TEMP_SHARD.match(p.name))}
    for b in sorted(n for n in numbers if n % num_jobs == job):
        for path in store.shard_paths(out_dir, b):
            remove_stale_temporaries(path)


def _finite(shard_no: int, vectors: np.ndarray, block, dtype: str) -> np.ndarray:
    """``vectors``, or an error when one holds NaN or inf, or a value its stored ``dtype`` cannot hold.

    A NaN vector scores NaN against every question, so it must never reach an index; nor may a
    vector that float16 storage would turn into inf (magnitudes above 65504).
    """
    bad = ~np.isfinite(vectors).all(axis=1)
    if dtype == "float16":
        with np.errstate(invalid="ignore"):
            bad |= (np.abs(vectors) > float(np.finfo(np.float16).max)).any(axis=1)
    if bad.any():
        hint = " (float16 holds at most 65504 in magnitude: encode with --dtype float32)" if dtype == "float16" else ""
        raise DprJaxError(f"shard {shard_no}: the vectors of {int(bad.sum())} passage(s), e.g. "
                          f"{block[int(np.argmax(bad))].id!r}, hold NaN, infinite or out-of-range values{hint}; "
                          f"nothing written")
    return vectors


def _check_settings(out_dir, settings: dict) -> None:
    """Refuse to resume into an index started with another model, settings or corpus content.

    Shards of two models (or of two versions of the corpus at the same path) would mix silently in
    one index, so the first run records ``encode-settings.json`` (the passages file's size and
    mtime included) and every later run must match it.
    """
    path = out_dir / SETTINGS_FILE
    if not path.exists():
        storage.write_json(path, settings)
        return
    previous = read_json(path)
    if not isinstance(previous, dict):
        raise InputError(path, "expected a JSON object; delete the directory to start over")
    before, now = previous.get("passages_fingerprint"), settings["passages_fingerprint"]
    if isinstance(before, dict) and before != now and previous.get("passages") == settings["passages"]:
        raise DprJaxError(
            f"{settings['passages']} has changed since {out_dir} was started ({_change(before, now)}); its "
            f"finished shards hold vectors of the old content. Encode into a new --out, or delete {out_dir} "
            f"to start over")
    diff = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise DprJaxError(f"{out_dir} was started with other settings ({detail}); use a new --out directory")


def _change(before: dict, now: dict) -> str:
    """What differs between two :func:`dpr_jax.storage.fingerprint` results, in words."""
    import datetime

    def when(ns):
        return datetime.datetime.fromtimestamp(ns / 1e9).isoformat(timespec="seconds") if isinstance(ns, int) else "?"

    said = f"size {before.get('size')} -> {now.get('size')} bytes"
    if "mtime_ns" in now:
        return f"{said}, modified {when(before.get('mtime_ns'))} -> {when(now['mtime_ns'])}"
    return f"{said}, object version {before.get('generation')} -> {now.get('generation')}"
