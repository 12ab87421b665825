"""The training loop in-process: device-count invariance, NaN stop, bad records, run dir, evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpr_jax.errors import DprJaxError, InputError
from dpr_jax.train.loop import train
from dpr_jax.models.loading import load_run_model
from dpr_jax.models.run_dir import checkpoint_steps, is_run_dir
from train_support import final_params, read_metrics, synthetic_records, tiny_config, write_jsonl


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", synthetic_records(n=48, n_passages=30))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, minilm_dir, train_file):
    """6 steps on 2 devices, checkpoints at 3 and 6."""
    workdir = tmp_path_factory.mktemp("run2")
    result = train(tiny_config(minilm_dir, train_file, **{"train.num_devices": 2}), workdir, progress=False)
    return workdir, result


def test_run_writes_metrics_checkpoints_and_a_loadable_model(reference_run):
    workdir, result = reference_run
    assert (result.start_step, result.final_step, result.total_steps, result.preempted) == (0, 6, 6, False)
    rows = read_metrics(workdir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert {"step", "loss", "lr", "grad_norm", "pairs_per_s", "accuracy", "epoch"} <= set(r)
        assert np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1
    assert rows[0]["lr"] == 0.0 and rows[1]["lr"] == pytest.approx(5e-4)  # warm-up over 2 steps to 1e-3
    assert checkpoint_steps(workdir) == [3, 6]
    assert is_run_dir(workdir)
    config = json.loads((workdir / "config.json").read_text())
    assert config["train"]["num_steps"] == 6
    # load_run_model rebuilds the architecture and the parameters of the asked-for checkpoint
    from dpr_jax.models.loading import load_model

    loaded = load_model(str(workdir))
    assert loaded.bert_config.hidden_size == 32 and loaded.encoder_config.pooling == "mean"
    p3, p6 = final_params(workdir, step=3), final_params(workdir)
    assert p3.keys() == p6.keys() and any(not np.array_equal(p3[k], p6[k]) for k in p3)
    with pytest.raises(DprJaxError, match="no checkpoint of step 4"):
        load_run_model(workdir, step=4)


def test_rerun_of_a_finished_run_does_nothing(reference_run, minilm_dir, train_file):
    workdir, _ = reference_run
    before = (workdir / "metrics.jsonl").read_text()
    result = train(tiny_config(minilm_dir, train_file, **{"train.num_devices": 2}), workdir, progress=False)
    assert (result.start_step, result.final_step) == (6, 6)
    assert (workdir / "metrics.jsonl").read_text() == before


def test_a_resumed_run_says_how_many_steps_each_logged_row_averages(reference_run, tmp_path, minilm_dir,
                                                                     train_file):
    """Resumed mid-window (as after SIGTERM), the next row averages fewer steps: it says so, and its
    numbers are the mean of exactly those steps of the uninterrupted run."""
    import shutil

    workdir, _ = reference_run
    reference = {r["step"]: r for r in read_metrics(workdir)}
    assert all(r["steps_in_window"] == 1 for r in reference.values())  # log_every=1
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    shutil.rmtree(resumed / "checkpoints" / "6")  # the run stopped after saving step 3
    train(tiny_config(minilm_dir, train_file, **{"train.num_devices": 2, "train.log_every": 4}), resumed,
          progress=False)
    rows = {r["step"]: r for r in read_metrics(resumed)}
    assert sorted(rows) == [1, 2, 3, 4, 6]
    assert rows[4]["steps_in_window"] == 1 and rows[6]["steps_in_window"] == 2
    assert rows[4]["loss"] == pytest.approx(reference[4]["loss"], rel=1e-6)
    assert rows[6]["loss"] == pytest.approx((reference[5]["loss"] + reference[6]["loss"]) / 2, rel=1e-6)


def test_loss_curve_is_the_same_on_1_2_and_8_devices(reference_run, tmp_path, minilm_dir, train_file):
    curves = {2: [r["loss"] for r in read_metrics(reference_run[0])]}
    for devices in (1, 8):
        workdir = tmp_path / f"d{devices}"
        train(tiny_config(minilm_dir, train_file, **{"train.num_devices": devices, "train.checkpoint_every": 100}),
              workdir, progress=False)
        curves[devices] = [r["loss"] for r in read_metrics(workdir)]
    assert len(curves[1]) == 6
    np.testing.assert_allclose(curves[8], curves[1], rtol=1e-5)
    np.testing.assert_allclose(curves[2], curves[1], rtol=1e-5)


@pytest.mark.parametrize("overrides,bad_step", [
    ({"train.nan_at_step": 3}, 4),  # poisoned 4th step (0-based index 3)
    ({"train.learning_rate": 1e30, "train.warmup_steps": 0, "train.max_grad_norm": 0.0}, None),
    # the case: loss and gradient of step 1 are finite, its update is not (1e39 is inf in float32)
    ({"train.learning_rate": 1e39, "train.warmup_steps": 0, "train.checkpoint_every": 1}, 1),
])
def test_nonfinite_step_stops_with_a_true_error_and_keeps_good_checkpoints(tmp_path, minilm_dir, train_file,
                                                                           overrides, bad_step):
    workdir = tmp_path / "nan"
    config = tiny_config(minilm_dir, train_file, **{"train.checkpoint_every": 2, **overrides})
    with pytest.raises(DprJaxError, match=r"became (nan|inf|non-finite) at step (\d+)") as err:
        train(config, workdir, progress=False)
    message = err.value.args[0]
    step = int(message.split(" at step ")[1].split()[0])
    if bad_step is not None:
        assert step == bad_step
    saved = checkpoint_steps(workdir)
    assert all(s < step for s in saved)  # nothing at or after the bad step
    for s in saved:
        assert all(np.all(np.isfinite(v)) for v in final_params(workdir, step=s).values())
    # what the message says about checkpoints is what is on disk
    if saved:
        assert f"the last checkpoint (step {saved[-1]}) is intact" in message
    else:
        assert "no checkpoint has been saved" in message and "intact" not in message


def test_bad_training_records_fail_or_are_skipped_with_file_and_line(tmp_path, minilm_dir):
    rows = synthetic_records(n=20, n_passages=10)
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, '{"question": "no positives", "answers": [], "positive_ctxs": []}')
    lines.insert(7, "{not json")
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"train.jsonl:4: field 'positive_ctxs'"):
        train(tiny_config(minilm_dir, path, **{"train.num_steps": 1}), tmp_path / "fail", progress=False)
    result = train(tiny_config(minilm_dir, path, **{"data.on_error": "skip", "train.num_steps": 1}),
                   tmp_path / "skip", progress=False)
    assert result.final_step == 1
    listed = (tmp_path / "skip" / "skipped_records.txt").read_text().splitlines()
    assert len(listed) == 2 and listed[0].startswith(f"{path}:4:") and listed[1].startswith(f"{path}:8:")


def test_batch_that_does_not_split_over_devices_is_an_error(tmp_path, minilm_dir, train_file):
    with pytest.raises(DprJaxError, match="not a multiple of the 8 devices"):
        train(tiny_config(minilm_dir, train_file, **{"train.batch_size": 12, "train.num_devices": 8}), tmp_path,
              progress=False)


def test_in_training_retrieval_eval_equals_brute_force(tmp_path, minilm_dir, train_file):
    """eval_top{k} in metrics.jsonl = NumPy search + has_answer with the checkpointed parameters."""
    from dpr_jax.eval.has_answer import has_answer

    records = synthetic_records(n=48, n_passages=30)
    passages = {}
    for r in records:
        for p in r["positive_ctxs"]:
            passages[p["passage_id"]] = {"id": p["passage_id"], "title": p["title"], "text": p["text"]}
    questions = [{"id": f"q{i}", "question": r["question"], "answers": r["answers"]} for i, r in enumerate(records[:20])]
    qpath = write_jsonl(tmp_path / "eval.jsonl", questions)
    ppath = write_jsonl(tmp_path / "passages.jsonl", list(passages.values()))
    workdir = tmp_path / "run"
    train(tiny_config(minilm_dir, train_file, **{"train.num_steps": 4, "train.num_devices": 2, "eval.every": 2,
                                                 "eval.questions": str(qpath), "eval.passages": str(ppath),
                                                 "eval.top_k": "(1, 3)", "eval.batch_size": 6}),
          workdir, progress=False)
    evals = [r for r in read_metrics(workdir) if "eval_top1" in r]
    assert [r["step"] for r in evals] == [2, 4]

    loaded = load_run_model(workdir)
    tok = loaded.tokenizer
    q = np.asarray(loaded.model.encode_questions(tok.questions([x["question"] for x in questions], 16, pad_to=16)))
    plist = list(passages.values())
    p = np.asarray(loaded.model.encode_passages(tok.passages([x["title"] for x in plist], [x["text"] for x in plist],
                                                             32, pad_to=32)))
    order = np.argsort(-(q @ p.T), axis=1, kind="stable")
    for k in (1, 3):
        hits = [any(has_answer(x["answers"], plist[j]["text"]) for j in order[i, :k]) for i, x in enumerate(questions)]
        assert evals[-1][f"eval_top{k}"] == pytest.approx(np.mean(hits))


def test_first_step_loss_removes_every_gold_passage_from_the_negatives(tmp_path, minilm_dir):
    """Issue 10 #15: a question's *other* gold passages (all positive_ctxs ids) are not negatives for it.

    Question 0 gets a second positive: the paragraph that is question 1's positive, in the same batch. The
    logged loss of step 1 (learning rate 0: parameters at their initial values) must equal a NumPy
    cross-entropy that drops every gold id of each question, not only copies of its sampled positive.
    """
    from dpr_jax.data.batches import BatchSpec, TrainBatches, passage_hash
    from dpr_jax.data.records import Passage
    from dpr_jax.data.training_data import read_training_records

    rows = synthetic_records(n=16, n_passages=12)
    rows[0]["positive_ctxs"].append(rows[1]["positive_ctxs"][0])
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    workdir = tmp_path / "run"
    overrides = {"train.num_steps": 1, "train.checkpoint_every": 1, "train.learning_rate": 0.0, "data.shuffle": "false",
                 "train.num_devices": 1}
    config = tiny_config(minilm_dir, path, **overrides)
    train(config, workdir, progress=False)
    logged = read_metrics(workdir)[0]["loss"]

    loaded = load_run_model(workdir)
    records, _ = read_training_records(path)
    spec = BatchSpec(global_batch_size=8, question_max_length=16, passage_max_length=32, hard_negatives=1,
                     shuffle=False, seed=config.seed)
    batch = TrainBatches(records, loaded.tokenizer, spec).batch(0)
    g = spec.group_size
    q = np.asarray(loaded.model.encode_questions(batch["questions"]), np.float64)
    p = np.asarray(loaded.model.encode_passages({k: v.reshape(8 * g, -1) for k, v in batch["passages"].items()}),
                   np.float64)
    ids = batch["passage_ids"].reshape(-1)

    def reference(gold_of):
        losses = []
        for i in range(8):
            keep = [j for j in range(8 * g) if j == i * g or ids[j] not in gold_of(i)]
            s = q[i] @ p[keep].T / config.train.temperature
            losses.append(np.log(np.sum(np.exp(s - s.max()))) + s.max() - s[keep.index(i * g)])
        return float(np.mean(losses))

    every_gold = reference(lambda i: {passage_hash(Passage(c["passage_id"], c["text"])) for c in rows[i]["positive_ctxs"]})
    sampled_only = reference(lambda i: {ids[i * g]})
    assert abs(every_gold - sampled_only) > 1e-3  # the case is one that tells the two rules apart
    assert logged == pytest.approx(every_gold, rel=1e-5)
