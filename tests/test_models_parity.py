"""The Flax NNX BERT against Hugging Face's PyTorch BertModel and sentence-transformers, on real weights."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from dpr_jax.errors import DprJaxError  # noqa: E402
from dpr_jax.models.hf_weights import read_state_dict, load_tower_weights  # noqa: E402
from dpr_jax.models.loading import load_model  # noqa: E402


@pytest.fixture(scope="module")
def sentences(squad_dev_file):
    """Real text of mixed lengths: SQuAD questions and the first sentences of paragraphs."""
    data = json.loads(squad_dev_file.read_text())["data"]
    out = []
    for article in data[:3]:
        para = article["paragraphs"][0]
        out.append(para["qas"][0]["question"])
        out.append(para["context"])  # long: exercises truncation and padding
        out.append(para["context"].split(". ")[0])
    return out


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_model(str(minilm_dir))


def _torch_bert(model_dir):
    model = transformers.BertModel.from_pretrained(str(model_dir), add_pooling_layer=False)
    return model.eval()


def test_token_states_match_pytorch_bert(minilm, minilm_dir, sentences):
    batch = minilm.tokenizer.questions(sentences, max_length=256)
    assert batch["attention_mask"].sum(1).min() < batch["attention_mask"].sum(1).max()  # mixed lengths
    ours = np.asarray(minilm.model.question.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))
    with torch.no_grad():
        ref = _torch_bert(minilm_dir)(
            input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long),
            token_type_ids=torch.tensor(batch["token_type_ids"], dtype=torch.long),
        ).last_hidden_state.numpy()
    mask = batch["attention_mask"].astype(bool)
    assert np.abs(ours[mask] - ref[mask]).max() < 1e-4
    # CLS pooling = the first token's state
    cls = load_model(str(minilm_dir), pooling="cls", normalize=False).model.encode_questions(batch)
    assert np.abs(np.asarray(cls) - ref[:, 0]).max() < 1e-4


def test_tokenizer_matches_hf_and_ignores_tokenizer_json_padding(minilm, minilm_dir, sentences):
    hf = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    titles = ["Super Bowl 50", "", "Warsaw"]
    texts = sentences[1:4]
    ours = minilm.tokenizer.passages(titles, texts, max_length=200)
    for row, (title, text) in enumerate(zip(titles, texts)):
        args = (title, text) if title else (text,)
        ref = hf(*args, truncation=True, max_length=200, padding=False)
        n = int(ours["attention_mask"][row].sum())
        assert list(ours["input_ids"][row, :n]) == ref["input_ids"]
        assert list(ours["token_type_ids"][row, :n]) == ref["token_type_ids"]
    # the packaged tokenizer.json truncates to 128; ours must not
    long = minilm.tokenizer.questions([sentences[1]], max_length=256)
    assert long["attention_mask"].sum() > 128


def test_mean_pooled_vectors_match_sentence_transformers(minilm, minilm_dir, sentences):
    st = pytest.importorskip("sentence_transformers")
    ref_model = st.SentenceTransformer(str(minilm_dir), device="cpu")
    ref = ref_model.encode(sentences, batch_size=len(sentences), convert_to_numpy=True)
    batch = minilm.tokenizer.questions(sentences, max_length=ref_model.max_seq_length)
    ours = np.asarray(minilm.model.encode_questions(batch))
    assert np.abs(ours - ref).max() < 1e-4


def test_bfloat16_compute_within_documented_bound(minilm_dir, minilm, sentences):
    """bfloat16 activations (float32 params, softmax and LayerNorm statistics): cosine >= 0.99 to float32."""
    bf16 = load_model(str(minilm_dir), dtype="bfloat16")
    batch = minilm.tokenizer.questions(sentences, max_length=256)
    a = np.asarray(minilm.model.encode_questions(batch))
    b = np.asarray(bf16.model.encode_questions(batch))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
    assert np.abs(a - b).max() < 2e-2


def test_separate_towers_start_from_the_same_weights(minilm_dir, minilm, sentences):
    two = load_model(str(minilm_dir), shared=False)
    assert two.model.question is not two.model.passage
    batch = minilm.tokenizer.questions(sentences[:2], max_length=64)
    np.testing.assert_array_equal(np.asarray(two.model.encode_questions(batch)),
                                  np.asarray(two.model.encode_passages(batch)))


def _tiny_bert_config(**kw):
    return transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64, **kw)


def _write_tokenizer(minilm_dir, out):
    transformers.AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(str(out))


def _ids(batch_size=3, length=10, vocab=120, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch_size, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def test_hf_dpr_question_encoder_layout_with_projection(tmp_path, minilm_dir):
    torch.manual_seed(0)
    cfg = transformers.DPRConfig(**_tiny_bert_config().to_dict())
    cfg.projection_dim = 16
    ref = transformers.DPRQuestionEncoder(cfg).eval()
    ref.save_pretrained(str(tmp_path))
    _write_tokenizer(minilm_dir, tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.encoder_config.pooling == "cls" and loaded.model.dim == 16
    batch = _ids()
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                   attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long)).pooler_output.numpy()
    got = np.asarray(loaded.model.encode_questions(batch))
    assert np.abs(got - want).max() < 1e-4


def test_pytorch_bin_with_bert_prefix(tmp_path, minilm_dir):
    torch.manual_seed(1)
    ref = transformers.BertForMaskedLM(_tiny_bert_config()).eval()  # keys carry "bert." and a head
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(ref.config.to_dict()))
    _write_tokenizer(minilm_dir, tmp_path)
    loaded = load_model(str(tmp_path))
    batch = _ids(seed=3)
    with torch.no_grad():
        want = ref.bert(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                        attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long)).last_hidden_state
    got = np.asarray(loaded.model.encode_questions(batch))
    assert np.abs(got - want[:, 0].numpy()).max() < 1e-4


def test_missing_and_unexpected_weights_listed_in_one_error(minilm_dir, minilm):
    state = read_state_dict(minilm_dir)
    state.pop("encoder.layer.3.output.dense.weight")
    state["encoder.layer.0.attention.self.rotary.weight"] = np.zeros(3, np.float32)
    with pytest.raises(DprJaxError) as err:
        load_tower_weights(minilm.model.question, state, "somewhere")
    msg = str(err.value)
    assert "somewhere" in msg and "layers.3.output.kernel" in msg and "rotary" in msg


def test_bad_model_spec_is_a_clear_error(tmp_path):
    with pytest.raises(DprJaxError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "x"))
    with pytest.raises(DprJaxError, match="no config.json"):
        load_model(str(tmp_path))
