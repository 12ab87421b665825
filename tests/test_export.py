"""`dpr-jax export`: exported directories load in transformers / sentence-transformers and compute what dpr-jax does.

References are the PyTorch models of transformers (BertModel, DPRQuestionEncoder, DPRContextEncoder)
and sentence-transformers, loaded from the exported files only, run on real SQuAD text in padded
batches of mixed lengths.
"""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from dpr_jax import cli  # noqa: E402
from dpr_jax.errors import DprJaxError  # noqa: E402
from dpr_jax.models.config import BertConfig, EncoderConfig  # noqa: E402
from dpr_jax.models.export import export_model  # noqa: E402
from dpr_jax.models.loading import init_random_model, load_model  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def texts(squad_dev_file):
    """Real questions, passage titles and passage texts (short and long: padding and truncation)."""
    data = json.loads(squad_dev_file.read_text())["data"]
    questions, titles, passages = [], [], []
    for article in data[:4]:
        para = article["paragraphs"][1]
        questions.append(para["qas"][0]["question"])
        titles.append(article["title"].replace("_", " "))
        passages.append(para["context"])
    passages[1] = passages[1].split(". ")[0]  # one short passage among long ones
    return {"questions": questions, "titles": titles, "passages": passages}


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_model(str(minilm_dir))


@pytest.fixture(scope="module")
def minilm_export(minilm, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "minilm"
    result = export_model(minilm, out, "hf")
    return result


@pytest.fixture(scope="module")
def random_projected(minilm_dir):
    """A small random dual encoder with separate towers and a 16-d projection ([CLS] pooling, as DPR)."""
    bert = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=128)
    return init_random_model(bert, EncoderConfig(pooling="cls", projection_dim=16), minilm_dir, shared=False, seed=3)


def _torch_inputs(batch):
    return {k: torch.tensor(np.asarray(v), dtype=torch.long) for k, v in batch.items()}


def _mixed_lengths(batch):
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # the batch really is padded
    return batch


def test_hf_export_of_minilm_loads_in_bertmodel_with_exact_keys_and_same_vectors(minilm, minilm_export, texts):
    out = minilm_export.out
    assert minilm_export.tower_dirs == {"shared": out}  # shared towers: one directory
    # the source's pooler head is carried into the export, so BertModel finds every key it expects
    model, info = transformers.BertModel.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    from safetensors.numpy import load_file

    source = load_file(str(Path(minilm.source) / "model.safetensors"))
    for name in ("pooler.dense.weight", "pooler.dense.bias"):
        np.testing.assert_array_equal(model.state_dict()[name].numpy(), source[name])
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))  # the exported tokenizer files
    batch = _mixed_lengths(minilm.tokenizer.questions(texts["questions"] + texts["passages"], max_length=256))
    ref_ids = tokenizer(texts["questions"][0])["input_ids"]
    assert list(batch["input_ids"][0, :len(ref_ids)]) == ref_ids
    with torch.no_grad():
        hidden = model(**_torch_inputs(batch)).last_hidden_state.numpy()
    mask = batch["attention_mask"][:, :, None].astype(np.float32)
    mean = (hidden * mask).sum(1) / mask.sum(1)
    want = mean / np.linalg.norm(mean, axis=1, keepdims=True)  # all-MiniLM-L6-v2: mean pooling + L2 norm
    got = np.asarray(minilm.model.encode_questions(batch))
    assert np.abs(got - want).max() < TOL
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["dpr_jax"]["pooling"] == "mean" and cfg["dpr_jax"]["normalize"] is True


def test_hf_export_loads_in_sentence_transformers(minilm, minilm_export, texts):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_export.out), device="cpu")
    assert model.max_seq_length == 256
    sentences = texts["questions"] + texts["passages"]
    want = model.encode(sentences, batch_size=len(sentences), convert_to_numpy=True)
    batch = _mixed_lengths(minilm.tokenizer.questions(sentences, max_length=model.max_seq_length))
    got = np.asarray(minilm.model.encode_questions(batch))
    assert np.abs(got - want).max() < TOL


def test_reimported_hf_export_restores_pooling_and_vectors(minilm, minilm_export, texts):
    back = load_model(str(minilm_export.out))
    assert back.shared and back.encoder_config == minilm.encoder_config
    batch = minilm.tokenizer.passages(texts["titles"], texts["passages"], max_length=128)
    a = np.asarray(minilm.model.encode_passages(batch))
    b = np.asarray(back.model.encode_passages(batch))
    assert np.abs(a - b).max() < 1e-6


def test_dpr_export_with_projection_matches_transformers_dpr_encoders(random_projected, texts, tmp_path):
    loaded = random_projected
    result = export_model(loaded, tmp_path / "dpr", "dpr")
    q_dir, p_dir = result.tower_dirs["question"], result.tower_dirs["passage"]
    assert (q_dir, p_dir) == (tmp_path / "dpr" / "question_encoder", tmp_path / "dpr" / "passage_encoder")
    q_ref, q_info = transformers.DPRQuestionEncoder.from_pretrained(str(q_dir), output_loading_info=True)
    c_ref, c_info = transformers.DPRContextEncoder.from_pretrained(str(p_dir), output_loading_info=True)
    for info in (q_info, c_info):
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert q_ref.config.projection_dim == 16 and q_ref.config.model_type == "dpr"

    questions = _mixed_lengths(loaded.tokenizer.questions(texts["questions"], max_length=64))
    passages = _mixed_lengths(loaded.tokenizer.passages(texts["titles"], texts["passages"], max_length=128))
    assert passages["token_type_ids"].max() == 1  # title [SEP] text: segment ids matter
    with torch.no_grad():
        want_q = q_ref.eval()(**_torch_inputs(questions)).pooler_output.numpy()
        want_p = c_ref.eval()(**_torch_inputs(passages)).pooler_output.numpy()
    got_q = np.asarray(loaded.model.encode_questions(questions))
    got_p = np.asarray(loaded.model.encode_passages(passages))
    assert got_q.shape == (4, 16) and got_p.shape == (4, 16)
    assert np.abs(got_q - want_q).max() < TOL and np.abs(got_p - want_p).max() < TOL
    # the towers really differ, so a swapped or duplicated tower would fail the comparison above
    other = np.asarray(loaded.model.encode_passages(questions))
    assert np.abs(other - got_q).max() > 100 * TOL

    back = load_model(str(tmp_path / "dpr"))
    assert not back.shared and back.encoder_config.projection_dim == 16
    assert np.abs(np.asarray(back.model.encode_questions(questions)) - got_q).max() < 1e-6
    assert np.abs(np.asarray(back.model.encode_passages(passages)) - got_p).max() < 1e-6


def test_hf_format_with_projection_is_a_clear_error_and_writes_nothing(random_projected, tmp_path):
    with pytest.raises(DprJaxError, match="--format dpr"):
        export_model(random_projected, tmp_path / "out", "hf")
    assert list(tmp_path.iterdir()) == []  # no OUT, no temporary directory left behind


def _make_run_dir(workdir: Path, loaded, step: int) -> None:
    """A run directory as `dpr-jax train` leaves it: model.json, tokenizer/, an orbax checkpoint."""
    from dpr_jax.checkpoint import Checkpointer
    from dpr_jax.train.optim import make_optimizer
    from dpr_jax.models.run_dir import CHECKPOINT_DIR, write_model_description
    from dpr_jax.models.functional import FunctionalModel

    workdir.mkdir()
    write_model_description(workdir, loaded)
    _, params = FunctionalModel.split(loaded.model)
    optimizer, _ = make_optimizer(1e-3, warmup_steps=1, total_steps=10)
    checkpointer = Checkpointer(workdir / CHECKPOINT_DIR, async_save=False)
    checkpointer.save(step, params, optimizer.init(params), {"step": step})
    checkpointer.wait()
    checkpointer.close()


def test_export_cli_on_a_run_directory(minilm_dir, texts, tmp_path, capsys):
    bert = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)
    run = tmp_path / "run"
    _make_run_dir(run, init_random_model(bert, EncoderConfig(pooling="cls"), minilm_dir, shared=False, seed=5), 7)
    out = tmp_path / "exported"
    assert cli.main(["export", "--workdir", str(run), "--out", str(out), "--max-length", "100"]) == 0
    q_dir, p_dir = out / "question_encoder", out / "passage_encoder"
    assert json.loads((q_dir / "config.json").read_text())["dpr_jax"]["checkpoint_step"] == 7
    assert json.loads((p_dir / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"] is True
    assert json.loads((p_dir / "sentence_bert_config.json").read_text())["max_seq_length"] == 100

    loaded = load_model(str(run))  # the checkpoint itself, through the training package
    questions = _mixed_lengths(loaded.tokenizer.questions(texts["questions"], max_length=64))
    passages = _mixed_lengths(loaded.tokenizer.passages(texts["titles"], texts["passages"], max_length=128))
    for tower_dir, batch, ours in ((q_dir, questions, loaded.model.encode_questions),
                                   (p_dir, passages, loaded.model.encode_passages)):
        ref, info = transformers.BertModel.from_pretrained(str(tower_dir), add_pooling_layer=False,
                                                           output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        with torch.no_grad():
            want = ref.eval()(**_torch_inputs(batch)).last_hidden_state[:, 0].numpy()
        assert np.abs(np.asarray(ours(batch)) - want).max() < TOL

    back = load_model(str(out))
    assert not back.shared and back.encoder_config.pooling == "cls" and not back.encoder_config.normalize
    assert np.abs(np.asarray(back.model.encode_passages(passages))
                  - np.asarray(loaded.model.encode_passages(passages))).max() < 1e-6

    # DPR layout of the same run, re-exported from the export (any model spec is accepted)
    assert cli.main(["export", "--workdir", str(out), "--out", str(tmp_path / "dpr"), "--format", "dpr"]) == 0
    ref = transformers.DPRContextEncoder.from_pretrained(str(tmp_path / "dpr" / "passage_encoder")).eval()
    with torch.no_grad():
        want = ref(**_torch_inputs(passages)).pooler_output.numpy()
    assert np.abs(np.asarray(loaded.model.encode_passages(passages)) - want).max() < TOL

    capsys.readouterr()
    assert cli.main(["export", "--workdir", str(run), "--out", str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["export", "--workdir", str(run), "--out", str(out), "--overwrite", "--step", "7"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dpr", "exported", "run"]  # no temporary leftovers
    assert cli.main(["export", "--workdir", str(run), "--out", str(tmp_path / "x"), "--step", "3"]) == 2
    assert "no checkpoint of step 3" in capsys.readouterr().err
    assert cli.main(["export", "--workdir", str(out), "--out", str(tmp_path / "y"), "--step", "3"]) == 2
    assert cli.main(["export", "--workdir", str(tmp_path / "missing"), "--out", str(tmp_path / "z")]) == 2
    assert cli.main(["export", "--workdir", str(run), "--out", str(tmp_path / "w"), "--max-length", "129"]) == 2
    assert "1..128" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "wxyz")


def test_a_dpr_checkpoint_encodes_passages_with_dprs_zero_segment_ids(random_projected, texts, tmp_path):
    """facebookresearch/DPR feeds every context with torch.zeros_like segment ids; a DPR checkpoint
    (model_type "dpr", no dpr-jax block: as facebook/dpr-* on the hub) is used the same way."""
    export_model(random_projected, tmp_path / "dpr", "dpr")
    for side in ("question_encoder", "passage_encoder"):
        cfg_path = tmp_path / "dpr" / side / "config.json"
        cfg = json.loads(cfg_path.read_text())
        assert cfg.pop("dpr_jax")["passage_segment_ids"] == "pair"  # what the random model used
        cfg_path.write_text(json.dumps(cfg))
    loaded = load_model(str(tmp_path / "dpr"))
    assert loaded.encoder_config.passage_segment_ids == "dpr-zeros"
    passages = _mixed_lengths(loaded.tokenizer.passages(texts["titles"], texts["passages"], max_length=128))
    assert passages["token_type_ids"].max() == 1  # the tokenizer pairs (title, text)...
    ref = transformers.DPRContextEncoder.from_pretrained(str(tmp_path / "dpr" / "passage_encoder")).eval()
    inputs = _torch_inputs(passages)
    with torch.no_grad():
        want = ref(**(inputs | {"token_type_ids": torch.zeros_like(inputs["input_ids"])})).pooler_output.numpy()
        paired = ref(**inputs).pooler_output.numpy()
    got = np.asarray(loaded.model.encode_passages(passages))  # ...and the model feeds zeros, as DPR
    assert np.abs(got - want).max() < TOL
    assert np.abs(paired - want).max() > 10 * TOL  # the convention makes a difference here
    back = load_model(str(tmp_path / "dpr"), passage_segment_ids="pair")
    assert np.abs(np.asarray(back.model.encode_passages(passages)) - paired).max() < TOL


def test_segment_convention_and_pooler_survive_training_and_export(tiny_model_dir, tmp_path):
    """The DPR recipe trains with zero segment ids; a pooler head of the initial weights is carried,
    untrained, through the run directory into the export."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from dpr_jax.train.config import load_config
    from dpr_jax.train.loop import train
    from train_support import REPO, tiny_config, write_synthetic_training

    assert load_config(Path(REPO) / "configs" / "nq.py").model.passage_segment_ids == "dpr-zeros"
    start = tmp_path / "start"
    shutil.copytree(tiny_model_dir, start)
    tensors = load_file(str(start / "model.safetensors"))
    rng = np.random.default_rng(0)
    pooler = {"pooler.dense.weight": rng.normal(size=(32, 32)).astype(np.float32),
              "pooler.dense.bias": rng.normal(size=32).astype(np.float32)}
    save_file(tensors | pooler, str(start / "model.safetensors"))
    config = tiny_config(tiny_model_dir, write_synthetic_training(tmp_path / "train.jsonl", n=16, n_passages=8),
                         **{"model.init": "pretrained", "model.name": str(start), "model.shared": "true",
                            "model.passage_segment_ids": "dpr-zeros", "train.num_steps": 2,
                            "train.checkpoint_every": 2})
    train(config, tmp_path / "run", progress=False)
    desc = json.loads((tmp_path / "run" / "model.json").read_text())
    assert desc["encoder_config"]["passage_segment_ids"] == "dpr-zeros"
    assert cli.main(["export", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["dpr_jax"]["passage_segment_ids"] == "dpr-zeros"
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    for name, value in pooler.items():
        np.testing.assert_array_equal(exported[name], value)
    assert not np.array_equal(exported["encoder.layer.0.output.dense.weight"],
                              tensors["encoder.layer.0.output.dense.weight"])  # the rest was trained
    model, info = transformers.BertModel.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert load_model(str(tmp_path / "out")).encoder_config.passage_segment_ids == "dpr-zeros"


def test_dpr_format_refuses_mean_pooling(minilm, tmp_path):
    with pytest.raises(DprJaxError, match="--format hf"):
        export_model(minilm, tmp_path / "out", "dpr")
    assert not (tmp_path / "out").exists()
