"""Retrieve passages for questions from a dense index by maximum inner product search.

Encodes the questions, then, by default, scores them exactly against the index's shards streamed
from disk with a jitted matmul + top_k on every local device, merging a running top-k (corpora
larger than memory work). When the index has a faiss index built by `dpr-jax index build`
(INDEX/ann.faiss, or --ann FILE), that one is searched instead (approximate; --nprobe/--ef-search
trade speed for recall), unless --exact. Writes DPR result JSON (question, answers, ctxs with
id/title/text/score/has_answer), or a TREC run with --trec; the same either way.

Run as N processes (launch/local.sh, multinode_gpu.sh, slurm_gpu.sbatch, tpu_pod.sh: the same
launchers as training), each process scores its own contiguous part of the index rows on its
devices, reports it as "searched rows A-B of N" on stderr, and the top-k lists are merged across
processes: the same result as one process. Only process 0 writes the run file.

Example:
  dpr-jax search --model sentence-transformers/all-MiniLM-L6-v2 --index index/ \\
      --questions eval.jsonl --passages passages.jsonl --k 100 --out dense.json
"""

from dpr_jax.commands.common import add_model_arguments, positive_int

HELP = "retrieve top-k passages for questions from a dense index"


def add_arguments(parser):
    add_model_arguments(parser, default_max_length=64)
    parser.add_argument("--index", required=True, help="index directory written by dpr-jax encode")
    parser.add_argument("--questions", required=True, help="questions: JSONL, DPR QA TSV, BEIR queries.jsonl")
    parser.add_argument("--qrels", help="BEIR qrels TSV giving positive ids")
    parser.add_argument("--passages", help="passages file, to put title/text/has_answer into the output "
                                           "(default: the one the index was encoded from, if unchanged)")
    parser.add_argument("--k", type=positive_int, default=100, help="passages per question")
    parser.add_argument("--match", default="string", choices=["string", "regex"], help="answer matching")
    parser.add_argument("--out", required=True, help="run file to write")
    parser.add_argument("--trec", action="store_true", help="write a TREC run file instead of DPR JSON")
    g = parser.add_argument_group("approximate search and truncation")
    g.add_argument("--exact", action="store_true",
                   help="search the shards exactly with JAX even when a faiss index (INDEX/ann.faiss) exists")
    g.add_argument("--ann", metavar="FILE", help="faiss index to search (default: INDEX/ann.faiss when present)")
    g.add_argument("--nprobe", type=int, help="faiss IVF: inverted lists visited per question (default: the value "
                                              "stored at build time; more = higher recall, slower)")
    g.add_argument("--ef-search", type=int, help="faiss HNSW: candidate list size (default: stored at build time, "
                                                 "at least --k; more = higher recall, slower)")
    g.add_argument("--rerank", type=int, metavar="K",
                   help="faiss: take its top K (>= --k) and re-score them exactly from the shards on disk (reads K "
                        "vectors per question; scores become exact q.p, recall@k becomes the index's recall@K)")
    g.add_argument("--faiss-param", action="append", default=[], metavar="NAME=VALUE",
                   help="any other faiss ParameterSpace setting, repeatable (e.g. k_factor_rf=4: a Refine stage "
                        "re-scores 4 x k candidates)")
    g.add_argument("--approx-recall", type=float, metavar="R",
                   help="JAX path with jax.lax.approx_max_k at recall target R (0 < R < 1) per chunk instead of the "
                        "exact top_k. TPU-optimised: on TPU an approximate partial reduction, faster, keeps about R "
                        "of the true top-k; on CPU and GPU (JAX 0.10.2) XLA lowers it to the same exact TopK, so "
                        "results are exact and speed unchanged. Implies the JAX path (ignores a faiss index)")
    g.add_argument("--dim", type=int, help="compare in the first DIM coordinates (Matryoshka truncation of questions "
                                           "and, if the index is wider, passages; re-normalised when the model "
                                           "normalises). Default: the index's dimension")
    from dpr_jax.distributed import add_distributed_arguments

    add_distributed_arguments(parser)


def _faiss_params(items) -> dict:
    from dpr_jax.errors import DprJaxError

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise DprJaxError(f"--faiss-param must look like NAME=NUMBER (e.g. k_factor_rf=4), not {item!r}")
    return out


def run(args) -> int:
    import sys

    from dpr_jax.api import read_questions, search
    from dpr_jax.commands.common import api_model_from_args
    from dpr_jax.distributed import initialize_from_args, is_main_process
    from dpr_jax.index.retrieve import passages_of_index
    from dpr_jax.storage import check_output_file

    initialize_from_args(args)
    faiss_params = _faiss_params(args.faiss_param)
    if is_main_process():  # only process 0 writes the run; its mistakes are reported before the model loads
        check_output_file(args.out)
        if not args.trec:
            passages_of_index(args.index, args.passages)
    questions = read_questions(args.questions, qrels=args.qrels)
    model = api_model_from_args(args, "question")
    entries = search(model, args.index, questions, args.k, out=args.out, passages=args.passages, match=args.match,
                     trec=args.trec, dim=args.dim, exact=args.exact, ann=args.ann, nprobe=args.nprobe, ef_search=args.ef_search, faiss_params=faiss_params,
                     rerank=args.rerank, approx_recall=args.approx_recall)
    if not is_main_process():
        print("process 0 writes the run file", file=sys.stderr)
        return 0
    print(f"{args.out}: {len(entries)} questions x top-{args.k}", file=sys.stderr)
    return 0
