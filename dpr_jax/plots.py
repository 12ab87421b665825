"""Two pictures of a model: its vector space (``plot_embeddings``) and its training curves (``plot_training``).

``plot_embeddings`` encodes a sample of questions, their gold passages and some random other
passages, projects all vectors to 2-D with PCA (NumPy SVD, fitted on questions and passages
together so both live in the same plane) and draws questions and passages in two colours with a
line from each question to its positive passage: a trained dual encoder pulls the pairs together.

``plot_training`` draws loss, learning rate, in-batch accuracy and retrieval top-k over steps from
a run's ``metrics.jsonl``; panels without data are left out.

Both draw on a plain :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot state, no
display needed), write a PNG atomically when ``out`` is given, and return the figure.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dpr_jax import storage
from dpr_jax.errors import DprJaxError

QUESTION_COLOR = "#1f6fd1"  # blue
POSITIVE_COLOR = "#e8590c"  # orange
OTHER_COLOR = "#9a9a9a"  # grey
LINK_COLOR = "#c9c9c9"


# ---------------------------------------------------------------------------------------------
# shared helpers


def new_figure(width: float, height: float):
    """A pyplot-free figure on the Agg canvas (safe in threads, servers and tests)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, out, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG to ``out``, local or a URL (:func:`dpr_jax.storage.atomic_path`)."""
    out = storage.as_path(out)
    with storage.atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return out


def model_label(source: str) -> str:
    """A short name for a model spec: a directory's name, or the hub name as given."""
    if storage.is_remote(source):
        return storage.as_path(source).name
    path = Path(source)
    return path.name if path.exists() else source


# ---------------------------------------------------------------------------------------------
# embeddings


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, D]`` -> (``[N, 2]`` coordinates on the top two principal axes, their explained-variance ratios).

    Each axis's sign is fixed so its largest-magnitude loading is positive (a deterministic picture).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise DprJaxError(f"PCA needs at least 2 vectors, got shape {x.shape}")
    centered = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    axes = vt[:2]
    if len(axes) < 2:  # one-dimensional vectors: a flat second axis
        axes = np.vstack([axes, np.zeros_like(axes)])
        s = np.append(s, 0.0)
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1, signs)[:, None]
    total = float((s ** 2).sum())
    ratio = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    return centered @ axes.T, ratio


@dataclasses.dataclass
class EmbeddingSample:
    """What the embedding plot draws: questions, passages (positives first) and question->positive links."""

    questions: list  # Question
    passages: list  # Passage: the positives, then the random others
    num_positives: int
    links: list  # (question index, passage index of its first positive)


def select_sample(questions: Sequence, passages: Iterable, *, sample: int = 200, others: int = 100,
                  seed: int = 0) -> EmbeddingSample:
    """Up to ``sample`` questions with a positive in ``passages``, those positives, ``others`` random other passages.

    ``passages`` is streamed once (any corpus size): the positives of every question are kept, and
    ``others`` passages that are nobody's positive are reservoir-sampled. Questions are then drawn
    (file order kept) among those whose positive is in the corpus.
    """
    if sample < 1:
        raise DprJaxError("--sample must be at least 1")
    with_positives = [q for q in questions if q.positive_ids]
    if not with_positives:
        raise DprJaxError("the questions have no positive_ids, so there is no question->passage pair to draw; "
                          "use questions with gold passage ids (e.g. eval.jsonl from `dpr-jax data squad`)")
    rng = np.random.default_rng(seed)
    wanted = {pid for q in with_positives for pid in q.positive_ids}
    found, reservoir, seen_others = {}, [], 0
    for p in passages:
        if p.id in wanted:
            found[p.id] = p
        elif others > 0:  # reservoir sampling (Algorithm R) over the passages that are nobody's positive
            seen_others += 1
            if len(reservoir) < others:
                reservoir.append(p)
            else:
                j = int(rng.integers(seen_others))
                if j < others:
                    reservoir[j] = p
    kept = [q for q in with_positives if any(pid in found for pid in q.positive_ids)]
    if not kept:
        raise DprJaxError("none of the questions' positive_ids occur in the passages file "
                          "(are the questions and passages from the same corpus?)")
    if len(kept) > sample:
        kept = [kept[i] for i in sorted(rng.choice(len(kept), sample, replace=False))]
    positives = [found[pid] for pid in dict.fromkeys(pid for q in kept for pid in q.positive_ids) if pid in found]
    index = {p.id: i for i, p in enumerate(positives)}
    links = [(qi, index[next(pid for pid in q.positive_ids if pid in found)]) for qi, q in enumerate(kept)]
    return EmbeddingSample(kept, positives + reservoir, len(positives), links)


def _as_questions(questions):
    from dpr_jax.data.questions import read_questions

    return read_questions(questions) if isinstance(questions, (str, os.PathLike)) else list(questions)


def _as_passages(passages):
    from dpr_jax.data.passages import read_passages

    return read_passages(passages) if isinstance(passages, (str, os.PathLike)) else passages


def plot_embeddings(loaded, questions, passages, out=None, *, sample: int = 200, others: int = 100,
                    max_length: int = 256, batch_size: int = 64, seed: int = 0, title: str | None = None,
                    dpi: int = 100, figsize: tuple[float, float] = (8.0, 7.0), encoder=None):
    """Encode a sample with ``loaded`` and draw the questions and passages in the PCA plane.

    ``questions``/``passages``: file paths (any format :mod:`dpr_jax.data` reads) or sequences of
    :class:`~dpr_jax.data.records.Question` / :class:`~dpr_jax.data.records.Passage`. Returns the
    figure; writes a PNG of ``figsize * dpi`` pixels to ``out`` when given. ``encoder``: a
    :class:`~dpr_jax.index.encode.TextEncoder` of ``loaded`` to reuse (its compiled programs).
    """
    from matplotlib.collections import LineCollection

    from dpr_jax.index.encode import TextEncoder

    chosen = select_sample(_as_questions(questions), _as_passages(passages), sample=sample, others=others, seed=seed)
    encoder = encoder or TextEncoder(loaded, batch_size=batch_size, max_length=max_length)
    q_vecs = encoder.encode_questions([q.question for q in chosen.questions])
    p_vecs = encoder.encode_passages([p.title for p in chosen.passages], [p.text for p in chosen.passages])
    coords, ratio = pca_2d(np.concatenate([q_vecs, p_vecs]))
    q_xy, p_xy = coords[:len(q_vecs)], coords[len(q_vecs):]
    pos_xy, other_xy = p_xy[:chosen.num_positives], p_xy[chosen.num_positives:]

    fig = new_figure(*figsize)
    ax = fig.subplots()
    segments = [(q_xy[qi], pos_xy[pi]) for qi, pi in chosen.links]
    links = LineCollection(segments, colors=LINK_COLOR, linewidths=0.7, zorder=1,
                           label="question → its positive passage")
    links.set_gid("links")
    ax.add_collection(links)
    if len(other_xy):
        ax.scatter(other_xy[:, 0], other_xy[:, 1], s=14, marker="s", color=OTHER_COLOR, linewidths=0, zorder=2,
                   label=f"other passages ({len(other_xy)})", gid="other_passages")
    ax.scatter(pos_xy[:, 0], pos_xy[:, 1], s=26, marker="^", color=POSITIVE_COLOR, linewidths=0, zorder=3,
               label=f"positive passages ({len(pos_xy)})", gid="positive_passages")
    ax.scatter(q_xy[:, 0], q_xy[:, 1], s=22, marker="o", color=QUESTION_COLOR, linewidths=0, zorder=4,
               label=f"questions ({len(q_xy)})", gid="questions")
    ax.autoscale_view()
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%} of variance)")
    ax.set_title(title or f"{model_label(loaded.source)}: questions and passages, PCA of the vectors")
    ax.legend(loc="best", fontsize="small", framealpha=0.9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    if out is not None:
        save_png(fig, out, dpi)
    return fig


# ---------------------------------------------------------------------------------------------
# training curves


def read_training_metrics(workdir) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (via :func:`dpr_jax.models.run_dir.read_metrics`), non-empty."""
    from dpr_jax.models import run_dir

    path = run_dir.metrics_path(workdir)
    if not path.is_file():
        raise DprJaxError(f"{path} not found: plot training needs a run directory with metrics.jsonl "
                          f"(written by `dpr-jax train` every train.log_every steps)")
    rows = run_dir.read_metrics(path)
    if not rows:
        raise DprJaxError(f"{path} has no metrics yet (the first line is written after train.log_every steps)")
    return rows


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    pts = [(s, v) for s, v in pts if math.isfinite(v)]
    return (np.array([s for s, _ in pts], dtype=float), np.array([v for _, v in pts], dtype=float))


def _eval_keys(rows: list[dict]) -> list[str]:
    keys = {k for r in rows for k in r if re.fullmatch(r"eval_top\d+", k)}
    return sorted(keys, key=lambda k: int(k[len("eval_top"):]))


def training_panels(rows: list[dict]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """``(title, y label, [(metrics key, legend label), ...])`` for each panel that has data."""
    candidates = [
        ("training loss", "loss", [("loss", "loss")]),
        ("learning rate", "learning rate", [("lr", "lr")]),
        ("in-batch accuracy", "accuracy", [("accuracy", "top-1 among in-batch passages")]),
        ("retrieval on the eval set", "fraction of questions",
         [(k, f"top-{k[len('eval_top'):]} accuracy") for k in _eval_keys(rows)] + [("eval_mrr10", "MRR@10")]),
    ]
    panels = []
    for title, ylabel, series in candidates:
        series = [(k, label) for k, label in series if len(_series(rows, k)[0])]
        if series:
            panels.append((title, ylabel, series))
    return panels


def plot_training(workdir, out=None, *, title: str | None = None, dpi: int = 100,
                  panel_size: tuple[float, float] = (6.0, 4.0)):
    """Training curves of a run directory (or a ``metrics.jsonl``), one panel per quantity with data.

    Panels are laid out two per row; the figure is ``panel_size`` times the grid, in inches. Returns the
    figure; writes a PNG to ``out`` when given.
    """
    from matplotlib.ticker import MaxNLocator

    rows = read_training_metrics(workdir)
    panels = training_panels(rows)
    if not panels:
        raise DprJaxError(f"{workdir}: no loss, lr, accuracy or eval_top* values to plot")
    ncols = 1 if len(panels) == 1 else 2
    nrows = -(-len(panels) // ncols)
    fig = new_figure(panel_size[0] * ncols, panel_size[1] * nrows)
    for i, (panel_title, ylabel, series) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for key, label in series:
            steps, values = _series(rows, key)
            style = "--" if key == "eval_mrr10" else "-"
            ax.plot(steps, values, style, marker="o" if len(steps) < 30 else None, markersize=3, label=label, gid=key)
        ax.set_title(panel_title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if series[0][0] == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if len(series) > 1 or panel_title.startswith("retrieval"):
            ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
    run = storage.absolute(workdir)
    run = run.parent if run.is_file() else run
    fig.suptitle(title or f"training run {run.name}")
    fig.tight_layout()
    if out is not None:
        save_png(fig, out, dpi)
    return fig
