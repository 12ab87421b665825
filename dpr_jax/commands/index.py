"""Build a faiss index from a dense index's shards, for serving past memory and at speed.

  dpr-jax index build --index index/ --type ivf-pq --nlist 4096 --pq-m 96    # 96 B + 8 B per passage
  dpr-jax index build --index index/ --type hnsw --hnsw-m 32 --ef-construction 80
  dpr-jax index build --index index/ --type factory --factory "OPQ64,IVF4096,PQ64x4fs"

Trains on a seeded sample read from the shards, adds the corpus in chunks (memory: the index, the
sample and one chunk), and writes INDEX/ann.faiss with INDEX/ann.json (settings, search defaults,
a fingerprint of the shards). `dpr-jax search` then uses it automatically (--exact to bypass it);
after the shards change it refuses the stale index until it is rebuilt. Inner-product metric, as
DPR scores. Types:

  hnsw      graph over the full vectors (no training; most memory, high recall, fast queries)
  ivf-flat  inverted lists of full vectors (--nlist; --nprobe at search = --nlist is exact)
  ivf-pq    inverted lists of product-quantised codes (--nlist, --pq-m, --nbits): smallest
  sq8       8-bit scalar quantisation per dimension (flat; IVF with --nlist)
  factory   any faiss index_factory string (--factory)

Needs faiss: pip install 'dpr-jax[faiss]'.
"""

HELP = "build a faiss (HNSW / IVF / PQ / SQ8) index from encoded shards"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build a faiss index next to the shards",
                       description="Train on a sample of the shards, add the corpus in chunks, write INDEX/ann.faiss.")
    b.add_argument("--index", required=True, help="index directory written by dpr-jax encode")
    b.add_argument("--type", required=True, choices=["hnsw", "ivf-flat", "ivf-pq", "sq8", "factory"])
    b.add_argument("--out", metavar="FILE", help="faiss file to write (default INDEX/ann.faiss; its description "
                                                 "goes beside it as .json)")
    b.add_argument("--nlist", type=int, help="IVF inverted lists (default ~4 sqrt(N), a power of two)")
    b.add_argument("--pq-m", "--m", dest="pq_m", type=int, help="ivf-pq: sub-quantisers; must divide the "
                                                                "dimension (default dim/8)")
    b.add_argument("--nbits", type=int, help="ivf-pq: bits per sub-quantiser code (default 8)")
    b.add_argument("--hnsw-m", type=int, help="hnsw: neighbours per node (default 32)")
    b.add_argument("--ef-construction", type=int, help="hnsw: build-time candidate list (default 80)")
    b.add_argument("--factory", metavar="STRING", help="--type factory: a faiss index_factory string")
    b.add_argument("--train-size", type=int, help="rows sampled to train on (default 64 x nlist, at least 65,536, "
                                                  "at most 1M; held in memory as float32)")
    b.add_argument("--dim", type=int, help="index only the first DIM coordinates (Matryoshka truncation)")
    b.add_argument("--nprobe", type=int, help="search default stored with the index (default max(8, nlist/32))")
    b.add_argument("--ef-search", type=int, help="hnsw search default stored with the index "
                                                              "(default 128, raised to k at search)")
    b.add_argument("--chunk-rows", type=int, help="rows added per step (default 32768; bounds memory)")
    b.add_argument("--seed", type=int, help="seed of the training sample (default 0)")


_SETTINGS = ("nlist", "pq_m", "nbits", "hnsw_m", "ef_construction", "factory", "train_size", "dim", "seed",
             "chunk_rows", "nprobe", "ef_search")


def run(args) -> int:
    import sys

    from dpr_jax.api import build_index
    from dpr_jax.index.ann import default_path

    given = {name: getattr(args, name) for name in _SETTINGS if getattr(args, name) is not None}
    desc = build_index(args.index, args.type, out=args.out, **given)  # the defaults live in AnnSettings only
    out = args.out or default_path(args.index)
    print(f"{out}: {desc['factory']} over {desc['count']:,} x {desc['dim']} vectors, "
          f"{desc['faiss_bytes'] / 2**20:,.1f} MiB, built in {desc['build_seconds']:.1f} s", file=sys.stderr)
    return 0
