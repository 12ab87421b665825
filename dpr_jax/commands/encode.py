"""Encode a corpus offline into embedding shards (``INDEX/shard-NNNNN.npy`` + ``.ids``, ``meta.json``).

Streams the passages (memory bounded by --block-size, not by the corpus), sorts each block by token
length so little compute is spent on padding, splits batches over all local devices, and writes one
shard per block (temporary name, then rename). Rerunning skips finished shards; it is refused when
the model, the settings or the passages file (its size and mtime, recorded in encode-settings.json
and meta.json) differ from the first run's, since old and new shards would mix. ``--shard I/N`` (or
a multi-process launch, which sets it from the process index) splits the corpus across hosts or jobs.

Example:
  dpr-jax encode --model sentence-transformers/all-MiniLM-L6-v2 --passages passages.jsonl --out index/
"""

HELP = "encode a passage corpus into embedding shards on disk"


def add_arguments(parser):
    from dpr_jax.commands.common import add_model_arguments, positive_int
    from dpr_jax.distributed import add_distributed_arguments

    add_model_arguments(parser, default_max_length=256)
    parser.add_argument("--passages", required=True, help="passages: DPR TSV, JSONL or BEIR corpus.jsonl")
    parser.add_argument("--out", required=True, help="index directory to write")
    parser.add_argument("--shard", help="I/N: encode only job I's blocks of N (default: this process of a launch)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32", "bfloat16", "int8"],
                        help="stored vector dtype (default float16); int8 keeps a per-dimension scale per shard "
                             "(4x smaller than float32, each coordinate within scale/2)")
    parser.add_argument("--dim", type=positive_int, help="keep only the first DIM coordinates of each vector (Matryoshka "
                                                "truncation; re-normalised when the model normalises)")
    parser.add_argument("--block-size", type=positive_int, default=100_000, help="passages per output shard")
    add_distributed_arguments(parser)


def run(args) -> int:
    import sys

    import jax

    from dpr_jax.api import encode_corpus
    from dpr_jax.commands.common import api_model_from_args
    from dpr_jax.distributed import initialize_from_args
    from dpr_jax.index.encode import parse_shard
    from dpr_jax.storage import check_output_dir

    check_output_dir(args.out)
    initialize_from_args(args)
    shard = parse_shard(args.shard) if args.shard else (jax.process_index(), jax.process_count())
    model = api_model_from_args(args, "passage")
    summary = encode_corpus(model, args.passages, args.out, shard=shard, block_size=args.block_size,
                            dtype=args.dtype, dim=args.dim)
    print(f"{args.out}: {len(summary['written'])} shard(s) written, {len(summary['skipped'])} already done "
          f"(job {shard[0]}/{shard[1]}, {summary['count']} passages in the corpus)", file=sys.stderr)
    if summary["meta"] is None:
        print("meta.json not written yet: other jobs' shards are still missing", file=sys.stderr)
    return 0
