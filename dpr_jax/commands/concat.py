"""Make one concatenated model of a dense and a lexical one (SPAR), tuning the lexical weight w.

  dpr-jax concat --dense runs/dpr --lexical runs/lambda --out models/dpr+lambda \\
      --questions data/squad/dev.jsonl --passages data/squad/passages.jsonl
  dpr-jax concat --dense runs/dpr --lexical runs/lambda --out models/dpr+lambda --weight 0.5

The result is a directory with concat.json (the two parts and w) that every --model option takes:
`dpr-jax encode --model models/dpr+lambda` writes ONE index of [p_dense; p_lex] vectors, and
`dpr-jax search` scores each question's [q_dense; w*q_lex] against it: dense + w*lexical in one
inner product, no BM25 at query time. Both parts must use the same tokenizer.

Without --weight, w is swept over --weights on --questions (tune on a dev slice of the TRAINING
articles, `dpr-jax data squad --dev-articles N`, never on the eval questions) and the best by
--metric is written, with the whole sweep, into concat.json. The corpus vectors come from
--dense-index/--lexical-index (indexes each part already encoded, same passages) or are encoded
from --passages in memory.
"""

from __future__ import annotations

HELP = "one concatenated dense+lexical model (SPAR), with the lexical weight tuned on dev questions"


def _weights(text: str) -> list[float]:
    import argparse

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected numbers >= 0, got {text!r}")
    return values


def add_arguments(parser) -> None:
    from dpr_jax.index.weight_sweep import DEFAULT_WEIGHTS, METRICS

    parser.add_argument("--dense", required=True, help="the dense model (any model spec)")
    parser.add_argument("--lexical", required=True, help="the lexical model Λ (any model spec)")
    parser.add_argument("--out", required=True, help="directory to write concat.json into")
    parser.add_argument("--weight", type=float, help="use this w (no sweep)")
    parser.add_argument("--questions", help="tuning questions (a dev slice of the training articles)")
    parser.add_argument("--qrels", help="BEIR qrels for --questions")
    parser.add_argument("--passages", help="the corpus the tuning questions are searched in")
    parser.add_argument("--dense-index", help="the dense part's index of --passages (skips encoding it)")
    parser.add_argument("--lexical-index", help="the lexical part's index of --passages (skips encoding it)")
    parser.add_argument("--weights", type=_weights, default=list(DEFAULT_WEIGHTS),
                        help=f"candidate w (default {','.join(map(str, DEFAULT_WEIGHTS))})")
    parser.add_argument("--metric", choices=METRICS, default="mrr@10", help="what w maximises (default mrr@10)")
    parser.add_argument("--match", choices=("string", "regex"), default="string", help="answer matching")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per encoding batch")
    parser.add_argument("--question-max-length", type=int, default=64)
    parser.add_argument("--passage-max-length", type=int, default=256)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing concat.json in --out")


def _corpus_vectors(loaded, index_dir, passages_path, args, ids_wanted=None):
    """(ids, vectors) of the corpus for one part: from its index, or encoded from the passages file."""
    import numpy as np

    from dpr_jax.data.passages import read_passages
    from dpr_jax.index.encode import TextEncoder
    from dpr_jax.index.retrieve import open_index_for

    if index_dir:
        index = open_index_for(loaded, index_dir)
        return index.ids(), np.asarray(index.vectors_at(list(range(index.count))), dtype=np.float32)
    passages = list(read_passages(passages_path))
    encoder = TextEncoder(loaded, batch_size=args.batch_size, max_length=args.passage_max_length)
    return [p.id for p in passages], encoder.encode_passages([p.title for p in passages], [p.text for p in passages])


def run(args) -> int:
    import sys

    from dpr_jax import storage
    from dpr_jax.errors import DprJaxError
    from dpr_jax.models.concat import CONCAT_FILE, write_concat
    from dpr_jax.models.loading import concat_models, load_model

    out = storage.as_path(args.out)
    if (out / CONCAT_FILE).exists() and not args.overwrite:
        raise DprJaxError(f"{out / CONCAT_FILE} already exists; pass --overwrite to replace it")
    if args.weight is None and not (args.questions and (args.passages or (args.dense_index and args.lexical_index))):
        raise DprJaxError("give --weight W, or tuning questions (--questions) and their corpus (--passages, or "
                          "--dense-index and --lexical-index)")
    dense, lexical = load_model(args.dense), load_model(args.lexical)
    concat_models(dense, lexical, args.weight or 0.0, str(out))  # refuses mismatched tokenizers before any work
    if args.weight is not None:
        write_concat(out, args.dense, args.lexical, args.weight)
        print(f"{out / CONCAT_FILE}: {args.dense} + {args.weight} x {args.lexical}", file=sys.stderr)
        return 0

    from dpr_jax.data.questions import read_questions
    from dpr_jax.eval.metrics import format_table
    from dpr_jax.index.retrieve import encode_question_texts
    from dpr_jax.index.runs import fetch_passages
    from dpr_jax.index.weight_sweep import best_weight, metric_value, sweep

    questions = read_questions(args.questions, qrels=args.qrels)
    if not args.passages and not (args.dense_index and args.lexical_index):
        raise DprJaxError("--passages is needed unless both --dense-index and --lexical-index are given")
    d_ids, d_vec = _corpus_vectors(dense, args.dense_index, args.passages, args)
    l_ids, l_vec = _corpus_vectors(lexical, args.lexical_index, args.passages, args)
    if d_ids != l_ids:
        raise DprJaxError("the dense and lexical corpus vectors are not of the same passages in the same order "
                          "(give both indexes of one passages file, or --passages)")
    passages_path = args.passages
    if not passages_path:
        from dpr_jax.index.store import read_meta

        passages_path = read_meta(args.dense_index).get("passages")
        if not passages_path or not storage.as_path(passages_path).exists():
            raise DprJaxError(f"{args.dense_index} does not say which passages file it holds; pass --passages")
    passages = fetch_passages(passages_path, set(d_ids))
    texts = [q.question for q in questions]
    q_dense = encode_question_texts(dense, texts, batch_size=args.batch_size, max_length=args.question_max_length)
    q_lex = encode_question_texts(lexical, texts, batch_size=args.batch_size, max_length=args.question_max_length)
    results = sweep(q_dense, q_lex, d_vec, l_vec, d_ids, questions, passages, args.weights, match=args.match)
    best = best_weight(results, args.metric)
    print(format_table({f"w = {r['weight']:g}": r for r in results}))
    write_concat(out, args.dense, args.lexical, best["weight"], tuned={
        "questions": str(args.questions), "num_questions": len(questions), "metric": args.metric,
        "sweep": [{"weight": r["weight"], "top_k_accuracy": r["top_k_accuracy"], "mrr@10": r["mrr@10"]}
                  for r in results]})
    print(f"\nbest w = {best['weight']:g} ({args.metric} {metric_value(best, args.metric):.4f} on "
          f"{len(questions)} questions) -> {out / CONCAT_FILE}", file=sys.stderr)
    return 0
