"""`dpr-jax plot`: the PNGs are real images showing the data they are meant to show.

A tiny real training run (in-process `dpr-jax train` on a slice of the SQuAD split, with periodic
retrieval evaluation) provides both the metrics.jsonl and the model. Figures are inspected (panels,
points, line segments, labels) against values computed independently in the test, and the written
PNGs are decoded and searched for the plotted colours.
"""

import json
from pathlib import Path

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest

from dpr_jax import cli, plots
from dpr_jax.data.records import Passage, Question
from dpr_jax.errors import DprJaxError, InputError

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUM_EVAL_QUESTIONS = 24


@pytest.fixture(scope="module")
def small_data(squad_dev_file, tmp_path_factory):
    """64 training records, 24 eval questions, their gold passages plus 30 others (real SQuAD text)."""
    from dpr_jax.data.squad import prepare_squad

    root = tmp_path_factory.mktemp("plots_data")
    prepare_squad(squad_dev_file, root / "full")
    train = (root / "full" / "train.jsonl").read_text().splitlines()[:64]
    (root / "train.jsonl").write_text("\n".join(train) + "\n")
    questions = [json.loads(line) for line in (root / "full" / "eval.jsonl").read_text().splitlines()]
    questions = questions[:NUM_EVAL_QUESTIONS]
    (root / "eval.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    gold = {pid for q in questions for pid in q["positive_ids"]}
    passages = [json.loads(line) for line in (root / "full" / "passages.jsonl").read_text().splitlines()]
    kept = [p for p in passages if p["id"] in gold] + [p for p in passages if p["id"] not in gold][:30]
    (root / "passages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in kept))
    return {"train": root / "train.jsonl", "questions": root / "eval.jsonl", "passages": root / "passages.jsonl"}


@pytest.fixture(scope="module")
def run(small_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("plots_run") / "tinyrun"
    code = cli.main([
        "train", "--config", str(REPO / "configs" / "tiny.py"), "--workdir", str(workdir), "--no-progress",
        f"--config.data.train={small_data['train']}", f"--config.eval.questions={small_data['questions']}",
        f"--config.eval.passages={small_data['passages']}", "--config.eval.max_questions=0",
        "--config.train.num_steps=4", "--config.train.log_every=1", "--config.eval.every=2",
        "--config.train.batch_size=8", "--config.train.checkpoint_every=4", "--config.data.question_max_length=32",
        "--config.data.passage_max_length=64", "--config.eval.batch_size=32",
    ])
    assert code == 0
    return workdir


def _read_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC
    return matplotlib.image.imread(str(path))


def _pixels_of(image: np.ndarray, color: str, tol: float = 0.02) -> int:
    rgb = np.array(matplotlib.colors.to_rgb(color))
    return int((np.abs(image[..., :3] - rgb).max(axis=-1) < tol).sum())


def _collection(ax, gid):
    found = [c for c in ax.collections if c.get_gid() == gid]
    return found[0] if found else None


# ------------------------------------------------------------------------------------------------
# training curves


def test_plot_training_of_a_real_run(run, tmp_path):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "eval_top1" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4] and [r["step"] for r in eval_rows] == [2, 4]

    out = tmp_path / "training.png"
    fig = plots.plot_training(run, out)
    image = _read_png(out)
    assert image.shape == (800, 1200, 4)  # 2 x 2 panels of 6 x 4 inches at 100 dpi
    assert [ax.get_title() for ax in fig.axes] == [
        "training loss", "learning rate", "in-batch accuracy", "retrieval on the eval set"]
    assert all(ax.get_xlabel() == "step" for ax in fig.axes)
    assert "tinyrun" in fig.get_suptitle()

    def line(ax, gid):
        (found,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
        return list(found.get_xdata()), list(found.get_ydata())

    loss_ax, lr_ax, acc_ax, eval_ax = fig.axes
    assert line(loss_ax, "loss") == ([1, 2, 3, 4], pytest.approx([r["loss"] for r in train_rows]))
    assert line(lr_ax, "lr")[1] == pytest.approx([r["lr"] for r in train_rows])
    assert line(acc_ax, "accuracy")[1] == pytest.approx([r["accuracy"] for r in train_rows])
    assert [ln.get_gid() for ln in eval_ax.get_lines()] == ["eval_top1", "eval_top5", "eval_top20", "eval_mrr10"]
    assert line(eval_ax, "eval_top20") == ([2, 4], pytest.approx([r["eval_top20"] for r in eval_rows]))
    assert _pixels_of(image, "C0") > 100  # the curves are drawn


def test_plot_training_leaves_out_panels_without_data(tmp_path):
    rows = [{"step": s, "loss": 3.0 / s, "lr": 1e-5 * s} for s in (10, 20, 30)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "lo'  # cut short by a kill
    (tmp_path / "metrics.jsonl").write_text(text)
    out = tmp_path / "curves.png"
    fig = plots.plot_training(tmp_path, out, title="my run")
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "learning rate"]
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [10, 20, 30]  # the cut line is ignored
    assert fig.get_suptitle() == "my run"
    assert _read_png(out).shape == (400, 1200, 4)  # one row of two panels


def test_plot_training_errors(tmp_path, capsys):
    with pytest.raises(DprJaxError, match="metrics.jsonl"):
        plots.plot_training(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(DprJaxError, match="no metrics"):
        plots.plot_training(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2}\n{"step": 2, loss}\n{"step": 3, "loss": 1}\n')
    with pytest.raises(InputError, match=r"metrics.jsonl:2: invalid JSON"):
        plots.plot_training(tmp_path)
    assert cli.main(["plot", "training", "--workdir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a.png")]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


# ------------------------------------------------------------------------------------------------
# embeddings


def test_pca_2d_matches_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
    coords, ratio = plots.pca_2d(x + 7.0)
    centered = x - x.mean(0)
    values, vectors = np.linalg.eigh(np.cov(centered.T))
    top = vectors[:, ::-1][:, :2]
    ref = centered @ top
    assert np.allclose(np.abs(coords), np.abs(ref), atol=1e-8)
    assert np.allclose(ratio, values[::-1][:2] / values.sum())
    assert ratio[0] > ratio[1] > 0


def _reference_pca(vectors: np.ndarray) -> np.ndarray:
    centered = vectors - vectors.mean(0)
    _, vecs = np.linalg.eigh(np.cov(centered.T.astype(np.float64)))
    return centered @ vecs[:, ::-1][:, :2]


def test_plot_embeddings_of_a_trained_model(run, small_data, tmp_path):
    from dpr_jax.data.passages import load_passages
    from dpr_jax.data.questions import read_questions
    from dpr_jax.models.loading import load_model

    loaded = load_model(str(run))
    out = tmp_path / "embeddings.png"
    fig = plots.plot_embeddings(loaded, small_data["questions"], small_data["passages"], out, sample=1000, others=0,
                                max_length=64)
    (ax,) = fig.axes
    questions = read_questions(small_data["questions"])
    corpus = load_passages(small_data["passages"])
    gold_ids = list(dict.fromkeys(pid for q in questions for pid in q.positive_ids))
    q_pts = _collection(ax, "questions").get_offsets()
    p_pts = _collection(ax, "positive_passages").get_offsets()
    links = _collection(ax, "links").get_segments()
    assert len(q_pts) == NUM_EVAL_QUESTIONS and len(p_pts) == len(gold_ids) and len(links) == NUM_EVAL_QUESTIONS
    assert _collection(ax, "other_passages") is None  # others=0

    # the same picture computed independently: the model's towers on padded batches, PCA by eigh
    q_vecs = np.asarray(loaded.model.encode_questions(loaded.tokenizer.questions([q.question for q in questions], 64)))
    gold = [corpus[pid] for pid in gold_ids]
    p_vecs = np.asarray(loaded.model.encode_passages(
        loaded.tokenizer.passages([p.title for p in gold], [p.text for p in gold], 64)))
    ref = _reference_pca(np.concatenate([q_vecs, p_vecs]))
    drawn = np.concatenate([q_pts, p_pts])
    for axis in range(2):
        sign = np.sign(ref[:, axis] @ drawn[:, axis])
        assert np.abs(drawn[:, axis] - sign * ref[:, axis]).max() < 1e-3 * np.abs(ref[:, axis]).max()
    for i, (start, end) in enumerate(links):  # each question joined to its own gold passage
        assert np.allclose(start, q_pts[i])
        assert np.allclose(end, p_pts[gold_ids.index(questions[i].positive_ids[0])])

    assert ax.get_xlabel().startswith("PC1") and ax.get_ylabel().startswith("PC2")
    assert "tinyrun" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()][1:] == [
        f"positive passages ({len(gold_ids)})", f"questions ({NUM_EVAL_QUESTIONS})"]
    image = _read_png(out)
    assert image.shape == (700, 800, 4)
    assert _pixels_of(image, plots.QUESTION_COLOR) > 50 and _pixels_of(image, plots.POSITIVE_COLOR) > 50


def test_select_sample_draws_questions_their_positives_and_random_others():
    passages = [Passage(f"p{i}", f"text {i}", f"title {i}") for i in range(50)]
    questions = [Question(f"q{i}", f"question {i}", ("a",), (f"p{i}", f"p{i + 1}") if i % 3 else ())
                 for i in range(30)]
    questions.append(Question("q-missing", "its passage is not in the corpus", ("a",), ("nope",)))
    s = plots.select_sample(questions, iter(passages), sample=8, others=5, seed=1)
    assert len(s.questions) == 8 and all(q.positive_ids for q in s.questions)
    order = [questions.index(q) for q in s.questions]
    assert order == sorted(order) and questions[-1] not in s.questions  # file order; no question without gold
    want_positives = list(dict.fromkeys(pid for q in s.questions for pid in q.positive_ids))
    assert [p.id for p in s.passages[:s.num_positives]] == want_positives
    others = [p.id for p in s.passages[s.num_positives:]]
    everyones_gold = {pid for q in questions for pid in q.positive_ids}
    assert len(others) == 5 and len(set(others)) == 5 and not set(others) & everyones_gold
    assert all(s.passages[pi].id == s.questions[qi].positive_ids[0] for qi, pi in s.links)
    # the draw is a function of the seed
    again = plots.select_sample(questions, iter(passages), sample=8, others=5, seed=1)
    assert [p.id for p in again.passages] == [p.id for p in s.passages]
    assert any([p.id for p in plots.select_sample(questions, iter(passages), sample=8, others=5, seed=k).passages]
               != [p.id for p in s.passages] for k in range(2, 6))

    with pytest.raises(DprJaxError, match="positive_ids"):
        plots.select_sample([Question("q", "no gold", ("a",), ())], iter(passages))
    with pytest.raises(DprJaxError, match="same corpus"):
        plots.select_sample([questions[-1]], iter(passages))


def test_plot_embeddings_cli(run, small_data, tmp_path, capsys):
    out = tmp_path / "emb.png"
    args = ["plot", "embeddings", "--model", str(run), "--questions", str(small_data["questions"]),
            "--passages", str(small_data["passages"]), "--max-length", "64", "--out", str(out)]
    assert cli.main(args + ["--sample", "10", "--others", "12"]) == 0
    image = _read_png(out)
    assert image.shape == (700, 800, 4)
    for color in (plots.QUESTION_COLOR, plots.POSITIVE_COLOR, plots.OTHER_COLOR):
        assert _pixels_of(image, color) > 20

    no_gold = tmp_path / "plain.jsonl"
    no_gold.write_text('{"id": "1", "question": "who?", "answers": ["x"]}\n')
    out2 = tmp_path / "none.png"
    assert cli.main(args[:5] + [str(no_gold)] + args[6:-1] + [str(out2)]) == 2
    assert "positive_ids" in capsys.readouterr().err
    assert not out2.exists()
