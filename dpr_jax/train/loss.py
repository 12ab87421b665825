"""The training objective of a global batch: DPR's in-batch softmax, distillation, Matryoshka dimensions.

Layout. A global batch holds ``B`` questions and ``B * G`` passages in groups: question ``i`` owns
passages ``i*G .. i*G+G-1``, its positive first (column ``i*G``) then its ``G-1`` negatives. Every
loss here is a sum of per-question terms, so a device computes the terms of its own questions
(``first_question``) against the passages of the whole batch and the step adds them up.

Contrastive (``kind="contrastive"``, DPR). Each question is scored against *all* ``B * G``
passages, ``s = q · p / temperature``, and the loss is the softmax cross-entropy of its positive:
the other questions' positives and negatives are extra negatives (Karpukhin et al. 2020, sec. 3.2).

False-negative masking. The same passage can appear more than once in a batch (two SQuAD questions
about one paragraph, a hard negative that is another question's positive), and a question can have
several gold passages (every ``positive_ctxs`` entry). A gold passage of a question is not a negative
for it, so every column whose passage id is one of the question's gold ids (``gold_ids``), other
than its positive's own column, is removed from its softmax. Ids travel as int32 hashes
(:func:`dpr_jax.data.batches.passage_hash`).

Distillation (``kind="kl"`` or ``"margin_mse"``). A teacher (BM25 or a dense model, via ``dpr-jax
mine``) scored each question's positive and hard negatives (``teacher_scores [b, G]``); it never
scored the question against other questions' passages, so a question's distillation *candidates*
are its own group, as in Tevatron's distillation trainer and RocketQA. Passages without a teacher
score (NaN: random negatives, ctxs without ``score``) are left out of this term. With student
logits ``s_j = q · p_j / temperature`` and teacher logits ``t_j = score_j / teacher_temperature``:

* ``kl``: ``KL(softmax(t) || softmax(s))`` over the candidates;
* ``margin_mse`` (Hofstätter et al. 2020): the mean over the negatives ``j`` of
  ``((s_0 - s_j) - (t_0 - t_j))²`` (``temperature = teacher_temperature = 1`` compares raw scores).

The objective is then ``distillation + contrastive_weight * contrastive``; the in-batch negatives
take part only through the contrastive term.

Matryoshka (Kusupati et al. 2022; sentence-transformers' MatryoshkaLoss). With ``dims``, the
objective above is computed on the first ``d`` dimensions of the question and passage vectors for
each ``d`` (re-normalised to unit length when the model normalises its vectors, as a truncated
vector would be at search time) and the weighted sum is the loss, so the leading dimensions alone
make a usable, smaller index. The reported in-batch accuracy is at the full dimension.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

KINDS = ("contrastive", "kl", "margin_mse")
_MASKED = float(jnp.finfo(jnp.float32).min)  # a logit that softmax turns into 0, with no inf/NaN about


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """What the objective is (static: a change recompiles the step). See the module docstring."""

    group_size: int  # passages per question: 1 positive + negatives
    temperature: float = 1.0
    mask_false_negatives: bool = True
    kind: str = "contrastive"  # "contrastive", "kl" or "margin_mse"
    contrastive_weight: float = 0.0  # with a distillation kind: weight of the contrastive term added
    teacher_temperature: float = 1.0
    dims: tuple[int, ...] = ()  # Matryoshka: leading dimensions trained (empty: the full vector only)
    dim_weights: tuple[float, ...] = ()  # one per dim (empty: all 1)
    normalized: bool = False  # the model L2-normalises its vectors: truncated ones are re-normalised

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"loss kind {self.kind!r} is not one of {KINDS}")
        if self.dim_weights and len(self.dim_weights) != len(self.dims):
            raise ValueError(f"{len(self.dim_weights)} dim_weights for {len(self.dims)} dims")

    @property
    def distill(self) -> bool:
        return self.kind != "contrastive"


def score_matrix(q: jax.Array, p: jax.Array, temperature: float) -> jax.Array:
    """``[b, D] x [P, D] -> [b, P]`` float32 scores ``q · p / temperature`` (full-precision matmul)."""
    scores = jnp.einsum("qd,pd->qp", q.astype(jnp.float32), p.astype(jnp.float32),
                        precision=jax.lax.Precision.HIGHEST)
    return scores / temperature


def false_negative_mask(passage_ids: jax.Array, gold_ids: jax.Array, positive_columns: jax.Array) -> jax.Array:
    """``[b, P]`` bool: True where a column holds one of the row's gold passages, other than its positive column.

    ``passage_ids [P]``, ``gold_ids [b, M]`` (every gold id of each row's question), ``positive_columns [b]``.
    """
    columns = jnp.arange(passage_ids.shape[0])
    gold = functools.reduce(jnp.logical_or, [passage_ids[None, :] == gold_ids[:, m:m + 1]
                                             for m in range(gold_ids.shape[1])])
    return gold & (columns[None, :] != positive_columns[:, None])


def contrastive_losses(scores: jax.Array, positive_columns: jax.Array,
                       exclude: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy of each row's positive column over its row, and top-1 correctness; ``exclude``d columns dropped."""
    if exclude is not None:
        scores = jnp.where(exclude, -jnp.inf, scores)
    log_probs = jax.nn.log_softmax(scores, axis=-1)
    loss = -jnp.take_along_axis(log_probs, positive_columns[:, None], axis=-1)[:, 0]
    correct = (jnp.argmax(scores, axis=-1) == positive_columns).astype(jnp.float32)
    return loss, correct


def group_scores(scores: jax.Array, positive_columns: jax.Array, group_size: int) -> jax.Array:
    """``[b, P] -> [b, G]``: each row's scores of its own group (its positive column and the next ``G-1``)."""
    columns = positive_columns[:, None] + jnp.arange(group_size)[None, :]
    return jnp.take_along_axis(scores, columns, axis=-1)


def _masked_log_softmax(logits: jax.Array, valid: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(jnp.where(valid, logits, _MASKED), axis=-1)


def kl_losses(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """``[b]`` ``KL(softmax(teacher) || softmax(student))`` over each row's entries with a finite teacher logit.

    ``student``/``teacher`` ``[b, G]`` logits; NaN teacher entries are not candidates (a row with
    fewer than two candidates contributes 0). NaN never enters the arithmetic, so gradients stay finite.
    """
    valid = jnp.isfinite(teacher)
    teacher = jnp.where(valid, teacher, 0.0)
    log_t = _masked_log_softmax(teacher, valid)
    log_s = _masked_log_softmax(student, valid)
    return jnp.sum(jnp.where(valid, jnp.exp(log_t) * (log_t - log_s), 0.0), axis=-1)


def margin_mse_losses(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """``[b]`` mean over each row's negatives ``j`` (column 0 is the positive) of ``((s_0-s_j) - (t_0-t_j))²``.

    Only pairs whose positive and negative both have a finite teacher logit count; a row with none is 0.
    """
    valid = jnp.isfinite(teacher)
    teacher = jnp.where(valid, teacher, 0.0)
    pairs = valid[:, :1] & valid[:, 1:]
    diff = (student[:, :1] - student[:, 1:]) - (teacher[:, :1] - teacher[:, 1:])
    total = jnp.sum(jnp.where(pairs, jnp.square(diff), 0.0), axis=-1)
    return total / jnp.maximum(jnp.sum(pairs, axis=-1), 1)


def truncate(x: jax.Array, dim: int, normalized: bool) -> jax.Array:
    """The first ``dim`` dimensions of ``x [n, D]``, re-normalised to unit length when ``normalized``."""
    if dim == x.shape[-1]:
        return x
    x = x[:, :dim]
    if normalized:
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x


def question_losses(q: jax.Array, p: jax.Array, targets: dict, opts: LossOptions,
                    first_question: jax.Array | int = 0) -> dict[str, jax.Array]:
    """Per-question terms of ``b`` questions against all ``P`` passages of the global batch.

    ``q [b, D]`` holds the global questions ``first_question .. first_question+b-1`` (one device's
    shard, or the whole batch with ``first_question=0``); ``p [P, D]`` every passage of the global
    batch. ``targets``: ``passage_ids [P]`` (all passages), and for the ``b`` rows of ``q``:
    ``gold_ids [b, M]`` (default: each row's positive only) and ``teacher_scores [b, G]`` (needed
    by the distillation kinds; NaN: none).

    Returns float32 ``[b]`` arrays: ``loss`` (the objective), ``accuracy`` (in-batch top-1 at the
    full dimension), and with distillation ``contrastive_loss`` and ``distill_loss`` (its parts,
    unweighted by ``contrastive_weight``, summed over ``dims`` with their weights).
    """
    full = q.shape[-1]
    dims = opts.dims or (full,)
    weights = opts.dim_weights or (1.0,) * len(dims)
    if max(dims) > full or min(dims) < 1:
        raise ValueError(f"Matryoshka dims {dims} must be within 1..{full}, the vectors' dimension")
    passage_ids = targets["passage_ids"]
    positive_columns = (first_question + jnp.arange(q.shape[0])) * opts.group_size
    exclude = None
    if opts.mask_false_negatives:
        gold = targets.get("gold_ids")
        gold = passage_ids[positive_columns][:, None] if gold is None else gold
        exclude = false_negative_mask(passage_ids, gold, positive_columns)
    teacher = None
    if opts.distill:
        teacher = targets["teacher_scores"].astype(jnp.float32) / opts.teacher_temperature
    distill_fn = {"kl": kl_losses, "margin_mse": margin_mse_losses}.get(opts.kind)

    out = {"loss": 0.0, "contrastive_loss": 0.0, "distill_loss": 0.0}
    correct = None
    for dim, weight in zip(dims, weights):
        scores = score_matrix(truncate(q, dim, opts.normalized), truncate(p, dim, opts.normalized), opts.temperature)
        ce, correct_at_dim = contrastive_losses(scores, positive_columns, exclude)
        if dim == full:
            correct = correct_at_dim
        out["contrastive_loss"] += weight * ce
        if distill_fn is None:
            out["loss"] += weight * ce
            continue
        distill = distill_fn(group_scores(scores, positive_columns, opts.group_size), teacher)
        out["distill_loss"] += weight * distill
        out["loss"] += weight * (distill + opts.contrastive_weight * ce if opts.contrastive_weight else distill)
    if correct is None:  # the full dimension is not among the trained ones: accuracy still reports it
        _, correct = contrastive_losses(score_matrix(q, p, opts.temperature), positive_columns, exclude)
    out["accuracy"] = correct
    if not opts.distill:
        del out["contrastive_loss"], out["distill_loss"]
    return out


def mean_losses(q: jax.Array, p: jax.Array, targets: dict, opts: LossOptions) -> dict[str, jax.Array]:
    """The batch means of :func:`question_losses` for a whole global batch (``q``: all ``B`` questions)."""
    return {k: v.mean() for k, v in question_losses(q, p, targets, opts).items()}
