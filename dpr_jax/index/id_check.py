"""The index-level promise that passage ids are unique, checked after encoding without a set of ids.

``dpr-jax encode`` streams the corpus without keeping its ids (21M of them would cost ~2 GB of
Python objects); once every shard exists, the job that is about to write ``meta.json`` reads the
shards' ``.ids`` files one at a time into a :class:`~dpr_jax.data.unique_ids.IdChecker` (memory:
one shard's ids and one hash bucket, whatever the corpus size). A repeated id stops the index from
being finished: ``meta.json`` is not written, so nothing can search a corpus whose rows could not
be told apart by id.
"""

from __future__ import annotations

import sys

import numpy as np
from tqdm.auto import tqdm

from dpr_jax.data.unique_ids import IdChecker
from dpr_jax.errors import DprJaxError
from dpr_jax.index import store


def check_unique_shard_ids(index_dir, num_shards: int, *, expected: int | None = None, passages=None,
                           progress: bool = True) -> int:
    """Raise :class:`DprJaxError` naming a repeated id and the shards and lines of both copies.

    Returns the number of ids checked. ``expected``: about how many ids the shards hold (sizes the
    hash buckets). ``passages`` (the corpus file) is named in the error so the user knows what to fix.
    """
    counts: list[int] = []
    with IdChecker(in_memory=0, expected=expected) as checker, tqdm(total=num_shards, unit="shard", desc="check ids",
                                                  disable=not progress, file=sys.stderr, leave=False) as bar:
        start = 0
        for b in range(num_shards):
            ids = store.read_shard_ids(index_dir, b)
            checker.add_many(ids, start)
            counts.append(len(ids))
            start += len(ids)
            bar.update(1)
        found, total = checker.duplicates(limit=1)
    if not found:
        return start
    starts = np.concatenate([[0], np.cumsum(counts)])

    def where(row: int) -> str:
        shard = int(np.searchsorted(starts, row, side="right") - 1)
        return f"row {row} = {store.shard_paths(index_dir, shard)[1].name} line {row - starts[shard] + 1}"

    dup = found[0]
    more = f" ({total} repeated ids in all)" if total > 1 else ""
    fix = (f"; fix {passages} (`dpr-jax data validate {passages} --kind passages` lists every duplicate with its "
           f"lines)" if passages else "")
    raise DprJaxError(f"{index_dir}: passage id {dup.id!r} occurs twice: {where(dup.first)} and {where(dup.second)}"
                      f"{more}. Passage ids must be unique{fix}, then encode into a new --out. meta.json was not written.")
