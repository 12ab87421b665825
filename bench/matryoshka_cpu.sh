#!/usr/bin/env bash
# Matryoshka at CPU size: SQuAD top-k at 384 / 128 / 64 dimensions for a Matryoshka-trained and a plain
# fine-tune of all-MiniLM-L6-v2 (and the zero-shot model), on the quickstart's split (README, issue 12).
#
#   SQUAD=path/to/dev-v1.1.json bash bench/matryoshka_cpu.sh     # ~35-45 min on a quiet 2-core machine
#
# Both fine-tunes are configs/squad_cpu.py (20 steps x 32 questions, one BM25 hard negative, GradCache);
# the Matryoshka one adds train.matryoshka_dims=(384, 128, 64) (the loss at the full width and at the first
# 128 and 64 coordinates, re-normalised, weights 1). Each model encodes the 2,067 passages once at full width;
# `search --dim D` truncates questions and passages to their first D coordinates (re-normalised).
# A stage whose output exists is not run again (so a finished quickstart's data, plain run and indexes can be
# linked into $WORK: the same commands made them). Metrics: $OUT/mrl-NAME-dD.metrics.json; table: $OUT/matryoshka.md.
set -euo pipefail
SQUAD=${SQUAD:-../shared/data/squad/dev-v1.1.json}
OUT=${OUT:-bench/results/quality_cpu}
W=${WORK:-bench/_work/matryoshka}; D=$W/data
MODEL=sentence-transformers/all-MiniLM-L6-v2
mkdir -p "$OUT" "$W/runs" "$W/index"
OUT=$(cd "$OUT" && pwd)  # evaluate runs inside $W
dj() { echo "\$ dpr-jax $*"; local t=$SECONDS; python3 -m dpr_jax "$@" 2>&1 | tr '\r' '\n' | grep -v -i "warn\|it/s\|psg/s\|q/s" | tail -3; echo "  ($((SECONDS-t)) s)"; }
[ -e $D/eval.jsonl ] || dj data squad --squad "$SQUAD" --out $D
[ -e $D/train-bm25.jsonl ] || dj mine --method bm25 --passages $D/passages.jsonl --train $D/train.jsonl --out $D/train-bm25.jsonl --num 3
train() {  # NAME [--config.X=Y ...]
  local name=$1; shift
  [ -e $W/$name/model.json ] || dj train --config configs/squad_cpu.py --workdir $W/$name --config.data.dir=$D \
      --config.data.train=$D/train-bm25.jsonl "$@"
}
train plain
train matryoshka "--config.train.matryoshka_dims=(384, 128, 64)"
cp $W/matryoshka/metrics.jsonl "$OUT/metrics-matryoshka.jsonl"
for m in "zeroshot $MODEL" "plain $W/plain" "matryoshka $W/matryoshka"; do
  set -- $m
  [ -e $W/index/$1/meta.json ] || dj encode --model "$2" --passages $D/passages.jsonl --out $W/index/$1 --max-length 256
  for d in 384 128 64; do
    dj search --model "$2" --index $W/index/$1 --questions $D/eval.jsonl --k 100 --dim $d --out $W/runs/$1-d$d.json
    (cd "$W" && python3 -m dpr_jax evaluate --run runs/$1-d$d.json --name "$1-d$d" \
        --out "$OUT/mrl-$1-d$d.metrics.json" 2>/dev/null | tail -1)
  done
done
{
  echo "SQuAD v1.1 dev, the quickstart split: the 2,142 questions of the 12 benchmark articles over all 2,067 paragraphs; top-k accuracy (%)."
  for d in 384 128 64; do
    echo; echo "**$d dimensions**"; echo
    python3 bench/quality_table.py "$OUT" "mrl-zeroshot-d$d=zero-shot MiniLM" "mrl-plain-d$d=plain fine-tune" \
        "mrl-matryoshka-d$d=Matryoshka fine-tune (384, 128, 64)"
  done
} > "$OUT/matryoshka.md"
cat "$OUT/matryoshka.md"
