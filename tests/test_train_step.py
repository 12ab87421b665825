"""The sharded step: same loss and gradients on 8 devices as on 1, GradCache = plain, loss = reference,
for the contrastive objective and for distillation (KL, MarginMSE) with Matryoshka dimensions.

A small real dual encoder (dpr_jax.models, 1 layer, separate towers) on random token ids; dropout off
unless a test is about dropout. Gradients are compared leaf by leaf relative to the global gradient
norm (leaves such as attention-key biases have an exactly-zero true gradient, so their own norm is noise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dpr_jax.mesh import global_batch, make_mesh, replicate
from dpr_jax.models.config import BertConfig, EncoderConfig
from dpr_jax.models.dual_encoder import DualEncoder
from dpr_jax.models.functional import FunctionalModel
from dpr_jax.train.loss import LossOptions, mean_losses
from dpr_jax.train.step import StepOptions, init_train_state, make_grad_fn, make_train_step

B, G, LQ, LP, VOCAB = 16, 3, 8, 12, 97


@pytest.fixture(scope="module")
def model():
    bert = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=32)
    return FunctionalModel.split(DualEncoder(bert, EncoderConfig(pooling="mean"), shared=False, rngs=nnx.Rngs(0)))


def _tokens(rng, shape):
    ids = rng.integers(1, VOCAB, shape).astype(np.int32)
    lengths = rng.integers(3, shape[-1] + 1, shape[:-1])
    mask = (np.arange(shape[-1]) < lengths[..., None]).astype(np.int32)
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros(shape, np.int32)}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    b = {"questions": _tokens(rng, (B, LQ)), "passages": _tokens(rng, (B, G, LP)),
         "passage_ids": rng.integers(0, 2**31 - 1, (B, G)).astype(np.int32),
         "teacher_scores": rng.uniform(0, 5, (B, G)).astype(np.float32)}
    # false negatives across device boundaries: q0's positive reappears as q13's hard negative, q9 shares q2's
    for dst, src in (((13, 1), (0, 0)), ((9, 0), (2, 0))):
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            b["passages"][k][dst] = b["passages"][k][src]
        b["passage_ids"][dst] = b["passage_ids"][src]
    b["gold_ids"] = np.repeat(b["passage_ids"][:, :1], 2, axis=1)
    b["gold_ids"][4, 1] = b["passage_ids"][11, 0]  # q4's second gold passage is q11's positive
    b["teacher_scores"][6, 2] = b["teacher_scores"][15, 1] = np.nan  # pool negatives: no teacher score
    return b


def _flat_vectors(model, batch):
    fmodel, params = model
    q = np.asarray(fmodel.encode(params, "question", batch["questions"]))
    p = np.asarray(fmodel.encode(params, "passage", {k: v.reshape(B * G, -1) for k, v in batch["passages"].items()}))
    return q, p


def _grads(model, batch, devices, loss=None, **opts):
    fmodel, params = model
    mesh = make_mesh(devices)
    fn = jax.jit(make_grad_fn(fmodel, mesh, StepOptions(loss or LossOptions(group_size=G), **{"dropout": False, **opts})))
    grads, metrics = fn(replicate(params, mesh), global_batch(batch, mesh), jax.random.PRNGKey(3))
    return jax.tree.map(np.asarray, grads), {k: float(v) for k, v in metrics.items()}


def assert_grads_close(a, b, rel=1e-5):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    norm = np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in lb))
    assert norm > 0
    total = np.sqrt(sum(np.sum(np.square(x - y, dtype=np.float64)) for x, y in zip(la, lb)))
    assert total / norm < rel, f"global relative error {total / norm}"
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], lb):
        err = np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-2 * norm)
        assert err < 10 * rel, f"{jax.tree_util.keystr(path)}: relative error {err}"


@pytest.fixture(scope="module")
def plain_1(model, batch):
    return _grads(model, batch, 1)


def test_loss_equals_reference_on_the_model_vectors(model, batch, plain_1):
    """The step's loss is the in-batch softmax CE of the vectors the encoder gives (NumPy reference)."""
    from test_train_loss import numpy_reference

    q, p = _flat_vectors(model, batch)
    ref = numpy_reference(q, p, batch["passage_ids"].reshape(-1), G, gold=batch["gold_ids"])
    assert plain_1[1]["loss"] == pytest.approx(ref["loss"].mean(), rel=1e-5)
    assert plain_1[1]["accuracy"] == pytest.approx(ref["accuracy"].mean())


def test_reference_grads_match_single_device_step(model, batch, plain_1):
    """Plain jax.grad of the un-sharded loss = the shard_map step on one device."""
    fmodel, params = model

    def loss(params):
        q = fmodel.encode(params, "question", batch["questions"])
        p = fmodel.encode(params, "passage", {k: v.reshape(B * G, -1) for k, v in batch["passages"].items()})
        targets = {"passage_ids": jnp.asarray(batch["passage_ids"].reshape(-1)),
                   "gold_ids": jnp.asarray(batch["gold_ids"])}
        return mean_losses(q, p, targets, LossOptions(group_size=G))["loss"]

    assert_grads_close(plain_1[0], jax.tree.map(np.asarray, jax.jit(jax.grad(loss))(params)))


def test_eight_devices_equal_one_device(model, batch, plain_1):
    grads, metrics = _grads(model, batch, 8)
    assert metrics["loss"] == pytest.approx(plain_1[1]["loss"], rel=1e-5)
    assert metrics["accuracy"] == plain_1[1]["accuracy"]
    assert_grads_close(grads, plain_1[0])


@pytest.mark.parametrize("devices,q_chunk,p_chunk", [(1, 4, 6), (8, 1, 3), (2, 0, 8)])
def test_gradcache_equals_plain_gradients(model, batch, plain_1, devices, q_chunk, p_chunk):
    grads, metrics = _grads(model, batch, devices, gradcache=True, question_chunk=q_chunk, passage_chunk=p_chunk)
    assert metrics["loss"] == pytest.approx(plain_1[1]["loss"], rel=1e-5)
    assert_grads_close(grads, plain_1[0])


def test_masking_off_changes_the_loss(model, batch, plain_1):
    _, metrics = _grads(model, batch, 2, LossOptions(group_size=G, mask_false_negatives=False))
    assert metrics["loss"] > plain_1[1]["loss"] + 1e-4  # copies of positives counted as negatives


def test_dropout_is_a_pure_function_of_the_key(model, batch):
    fmodel, params = model
    mesh = make_mesh(2)
    fn = jax.jit(make_grad_fn(fmodel, mesh, StepOptions(LossOptions(group_size=G), dropout=True)))
    p, b = replicate(params, mesh), global_batch(batch, mesh)
    (g1, m1), (g2, m2), (_, m3) = (fn(p, b, jax.random.PRNGKey(k)) for k in (5, 5, 6))
    assert float(m1["loss"]) == float(m2["loss"]) != float(m3["loss"])
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)))


def test_train_step_updates_and_skips_nonfinite(model, batch):
    """One optimizer step changes the params; a poisoned step (nan_at_step) leaves them as they were."""
    fmodel, params = model
    mesh = make_mesh(2)
    opt = optax.sgd(0.1)
    opts = StepOptions(LossOptions(group_size=G), dropout=False, nan_at_step=1)
    step = make_train_step(fmodel, mesh, opt, lambda n: 0.1, opts)
    state = init_train_state(params, opt, mesh)
    before = jax.tree.map(np.asarray, state["params"])
    state, m0 = step(state, global_batch(batch, mesh), jax.random.PRNGKey(0))
    after0 = jax.tree.map(np.asarray, state["params"])
    state, m1 = step(state, global_batch(batch, mesh), jax.random.PRNGKey(0))
    after1 = jax.tree.map(np.asarray, state["params"])
    assert float(m0["finite"]) == 1.0 and float(m1["finite"]) == 0.0 and np.isnan(float(m1["loss"]))
    assert int(state["step"]) == 2
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after0)))
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(after0), jax.tree.leaves(after1)))


def test_an_update_to_nonfinite_parameters_is_not_applied(model, batch):
    """Loss and gradient finite, but the update overflows (a learning rate of 1e39 is inf in float32):
    the step must be flagged and leave parameters and optimizer state as they were."""
    fmodel, params = model
    mesh = make_mesh(2)
    opt = optax.adam(1e39)
    step = make_train_step(fmodel, mesh, opt, lambda n: 1e39, StepOptions(LossOptions(group_size=G), dropout=False))
    state = init_train_state(params, opt, mesh)
    before = jax.tree.map(np.asarray, state)
    state, m = step(state, global_batch(batch, mesh), jax.random.PRNGKey(0))
    assert np.isfinite(float(m["loss"])) and np.isfinite(float(m["grad_norm"]))
    assert float(m["finite"]) == 0.0
    for x, y in zip(jax.tree.leaves(before["params"]), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(before["opt_state"]), jax.tree.leaves(state["opt_state"])):
        np.testing.assert_array_equal(x, y)


def test_bfloat16_compute_keeps_float32_params_and_close_loss(model, batch, plain_1):
    """dtype=bfloat16: activations in bf16, parameters and their gradients float32, loss near float32's."""
    fmodel32, params = model
    bert = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=32)
    fmodel16, _ = FunctionalModel.split(DualEncoder(bert, EncoderConfig(pooling="mean", dtype="bfloat16"),
                                                    shared=False, rngs=nnx.Rngs(0)))
    grads, metrics = _grads((fmodel16, params), batch, 2)
    assert all(g.dtype == np.float32 for g in jax.tree.leaves(grads))
    assert metrics["loss"] == pytest.approx(plain_1[1]["loss"], rel=2e-2)
    cos = sum(np.vdot(a, b) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_1[0]))) / np.sqrt(
        sum(np.vdot(a, a) for a in jax.tree.leaves(grads)) * sum(np.vdot(b, b) for b in jax.tree.leaves(plain_1[0])))
    assert cos > 0.99


# ---- distillation and Matryoshka: the same sharding and GradCache guarantees ---------------------------------

DISTILL = {
    "kl+matryoshka": LossOptions(group_size=G, kind="kl", contrastive_weight=0.5, temperature=0.5,
                                 teacher_temperature=2.0, dims=(32, 8), dim_weights=(1.0, 0.5)),
    "margin_mse": LossOptions(group_size=G, kind="margin_mse", teacher_temperature=4.0),
}


@pytest.fixture(scope="module")
def distill_1(model, batch):
    return {name: _grads(model, batch, 1, loss) for name, loss in DISTILL.items()}


@pytest.mark.parametrize("name", list(DISTILL))
def test_distillation_step_loss_equals_reference(model, batch, distill_1, name):
    from test_train_loss import numpy_reference

    opts = DISTILL[name]
    q, p = _flat_vectors(model, batch)
    ref = numpy_reference(q, p, batch["passage_ids"].reshape(-1), G, gold=batch["gold_ids"],
                          teacher=batch["teacher_scores"], kind=opts.kind, temperature=opts.temperature,
                          contrastive_weight=opts.contrastive_weight, teacher_temperature=opts.teacher_temperature,
                          dims=opts.dims, dim_weights=opts.dim_weights)
    metrics = distill_1[name][1]
    for k in ("loss", "contrastive_loss", "distill_loss"):
        assert metrics[k] == pytest.approx(ref[k].mean(), rel=1e-5), k
    assert metrics["accuracy"] == pytest.approx(ref["accuracy"].mean())
    assert metrics["distill_loss"] > 0


@pytest.mark.parametrize("name,devices,gradcache", [("kl+matryoshka", 8, False), ("kl+matryoshka", 8, True),
                                                    ("margin_mse", 2, True)])
def test_distillation_on_devices_and_gradcache_equals_one_device(model, batch, distill_1, name, devices, gradcache):
    chunks = {"question_chunk": 1, "passage_chunk": 3} if gradcache else {}
    grads, metrics = _grads(model, batch, devices, DISTILL[name], gradcache=gradcache, **chunks)
    ref_grads, ref_metrics = distill_1[name]
    assert metrics.keys() == ref_metrics.keys()
    for k in metrics:
        assert metrics[k] == pytest.approx(ref_metrics[k], rel=1e-5), k
    assert_grads_close(grads, ref_grads)
