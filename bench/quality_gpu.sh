#!/usr/bin/env bash
# Quality benchmark: SQuAD v1.1 eval split (12 held-out articles), BM25 / zero-shot / DPR fine-tuned / hybrid.
#
#   MODEL=path/to/all-MiniLM-L6-v2 SQUAD=path/to/dev-v1.1.json OUT=bench/results/quality_gpu bash bench/quality_gpu.sh
#
# Sized for one GPU (a fine-tune of 120 steps x 128 questions takes ~1.5 min on an H100); VARIANTS picks the
# recipes below (a: 128 questions x (1 positive + 1 BM25 hard negative), lr 3e-5, 120 steps;
# b: 256 x (1 + 3), lr 5e-5, 120 steps; c: as a, 520 steps = 8 epochs). Each run's metrics go to
# $OUT/NAME.metrics.json; bench/quality_table.py turns them into the README table.
set -uo pipefail
MODEL=${MODEL:-sentence-transformers/all-MiniLM-L6-v2}
SQUAD=${SQUAD:-../shared/data/squad/dev-v1.1.json}
OUT=${OUT:-bench/results/quality_gpu}
W=${WORK:-/tmp/dpr-jax-quality}; D=$W/data
mkdir -p "$OUT"
dj() { echo "\$ dpr-jax $*"; local t=$SECONDS; python3 -m dpr_jax "$@" 2>&1 | grep -v -i "warn" | tail -4 || true; echo "  ($((SECONDS-t)) s)"; }
# evaluate from inside $W, so the metrics files (committed) name the run file, not this machine's scratch path
ev() { local out; out="$(cd "$OUT" && pwd)/$1.metrics.json"
       (cd "$W" && PYTHONPATH="$OLDPWD${PYTHONPATH:+:$PYTHONPATH}" python3 -m dpr_jax evaluate --run "$1.json" --name "$1" --out "$out") 2>/dev/null | tail -1; }
dj data squad --squad "$SQUAD" --out $D
dj bm25 --passages $D/passages.jsonl --questions $D/eval.jsonl --k 100 --out $W/bm25.json; ev bm25
dj mine --method bm25 --passages $D/passages.jsonl --train $D/train.jsonl --out $D/train-bm25.jsonl --num 10
dj encode --model "$MODEL" --passages $D/passages.jsonl --out $W/idx-zs --batch-size 512
dj search --model "$MODEL" --index $W/idx-zs --questions $D/eval.jsonl --k 100 --out $W/zeroshot.json --batch-size 512; ev zeroshot
for V in ${VARIANTS:-a}; do
  case $V in
    a) EXTRA="--config.train.batch_size=128 --config.train.num_steps=120 --config.train.learning_rate=3e-5" ;;
    b) EXTRA="--config.train.batch_size=256 --config.train.num_steps=120 --config.train.learning_rate=5e-5 --config.data.hard_negatives=3" ;;
    c) EXTRA="--config.train.batch_size=128 --config.train.num_steps=520 --config.train.learning_rate=3e-5" ;;
    *) echo "unknown variant $V"; exit 2 ;;
  esac
  dj train --config configs/squad.py --workdir $W/train-$V --config.model.name="$MODEL" --config.data.dir=$D \
     --config.data.train=$D/train-bm25.jsonl --config.eval.every=0 --config.train.checkpoint_every=100000 \
     --config.train.warmup_steps=60 --config.train.log_every=20 --config.model.dtype=bfloat16 $EXTRA
  cp $W/train-$V/metrics.jsonl "$OUT/metrics-$V.jsonl"
  dj encode --model $W/train-$V --passages $D/passages.jsonl --out $W/idx-$V --batch-size 512 --compute-dtype float32
  dj search --model $W/train-$V --index $W/idx-$V --questions $D/eval.jsonl --k 100 --out $W/ft-$V.json --batch-size 512 --compute-dtype float32; ev ft-$V
  dj hybrid --dense $W/ft-$V.json --sparse $W/bm25.json --alpha 1.0 --out $W/hybrid-$V.json; ev hybrid-$V
done
