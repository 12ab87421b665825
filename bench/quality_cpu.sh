#!/usr/bin/env bash
# Quality at CPU size: the README's SPAR table (BM25, zero-shot, DPR, Λ, DPR ⊕ Λ as one index, hybrid) and the
# no-collapse check on held-out articles, on the SQuAD v1.1 split with 4 dev + 4 held-out training articles.
#
#   SQUAD=path/to/dev-v1.1.json bash bench/quality_cpu.sh        # ~1.5-2 h on the shared 2-core machine
#
# The same stages as `dpr-jax quickstart --recipe best`, spelled out as the commands that made the README's
# numbers. Metrics go to $OUT/NAME.metrics.json (run paths relative to $WORK), training logs to $OUT/metrics-*.jsonl.
set -euo pipefail
SQUAD=${SQUAD:-../shared/data/squad/dev-v1.1.json}
OUT=${OUT:-bench/results/quality_cpu}
W=${WORK:-bench/_work/quality_cpu}; D=$W/data
MODEL=sentence-transformers/all-MiniLM-L6-v2
mkdir -p "$OUT" "$W/runs"
dj() { echo "\$ dpr-jax $*"; local t=$SECONDS; python3 -m dpr_jax "$@" 2>&1 | tr '\r' '\n' | grep -v -i "warn\|it/s\|psg/s\|q/s" | tail -3; echo "  ($((SECONDS-t)) s)"; }
ev() { (cd "$W" && python3 -m dpr_jax evaluate --run "runs/$1.json" --name "$1" --out "$OLDPWD/$OUT/$1.metrics.json" 2>/dev/null | tail -1); }
dense() {  # NAME MODEL CORPUS QUESTIONS
  dj encode --model "$2" --passages "$3" --out "$W/index/$1" --max-length 256
  dj search --model "$2" --index "$W/index/$1" --questions "$4" --k 100 --out "$W/runs/$1.json"; ev "$1"
}
dj data squad --squad "$SQUAD" --out $D --dev-articles 4 --heldout-articles 4
dj bm25 --passages $D/passages.jsonl --questions $D/eval.jsonl --k 100 --out $W/runs/bm25.json; ev bm25
dj bm25 --passages $D/passages.jsonl --questions $D/dev.jsonl --k 100 --out $W/runs/bm25-dev.json; ev bm25-dev
dense zeroshot $MODEL $D/passages.jsonl $D/eval.jsonl
# DPR, today's recipe at CPU size (configs/squad_cpu.py: 20 steps x 32 questions, one BM25 hard negative)
dj mine --method bm25 --passages $D/passages.jsonl --train $D/train.jsonl --out $D/train-bm25.jsonl --num 3
dj train --config configs/squad_cpu.py --workdir $W/dpr --config.data.dir=$D --config.data.train=$D/train-bm25.jsonl
cp $W/dpr/metrics.jsonl "$OUT/metrics-dpr.jsonl"
dense dpr $W/dpr $D/passages.jsonl $D/eval.jsonl
dj hybrid --dense $W/runs/dpr.json --sparse $W/runs/bm25.json --alpha 1.0 --out $W/runs/hybrid.json; ev hybrid
# Λ: BM25 distilled on pseudo-queries (two span samplings) + BM25-labelled training questions
EX="--exclude $D/heldout/passages.jsonl"
dj data pseudo-queries --passages $D/passages.jsonl --out $D/pseudo-spans.jsonl $EX
dj data pseudo-queries --passages $D/passages.jsonl --out $D/pseudo-short-spans.jsonl $EX --seed 1 --min-words 4 --max-words 12
dj data pseudo-queries --passages $D/passages.jsonl --out $D/train-questions-bm25.jsonl $EX --questions $D/train.jsonl
cat $D/pseudo-spans.jsonl $D/pseudo-short-spans.jsonl $D/train-questions-bm25.jsonl > $D/lambda-train.jsonl
dj train --config configs/spar_lambda.py --workdir $W/lambda --config.data.train=$D/lambda-train.jsonl \
   --config.eval.questions=$D/dev.jsonl --config.eval.passages=$D/passages.jsonl
cp $W/lambda/metrics.jsonl "$OUT/metrics-lambda.jsonl"
dense lambda $W/lambda $D/passages.jsonl $D/eval.jsonl
# DPR ⊕ Λ: w tuned on the dev slice (training articles), then ONE index of the concatenated vectors
dj concat --dense $W/dpr --lexical $W/lambda --out $W/concat --questions $D/dev.jsonl --passages $D/passages.jsonl \
   --dense-index $W/index/dpr --lexical-index $W/index/lambda --overwrite
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['dense'],d['lexical']='dpr','lambda'; print(json.dumps(d,indent=1))" \
   $W/concat/concat.json > "$OUT/concat.json"
dense concat $W/concat $D/passages.jsonl $D/eval.jsonl
# no collapse elsewhere: the held-out articles' questions in their own corpus
for m in "heldout-zeroshot $MODEL" "heldout-dpr $W/dpr" "heldout-lambda $W/lambda" "heldout-concat $W/concat"; do
  set -- $m; dense "$1" "$2" $D/heldout/passages.jsonl $D/heldout/questions.jsonl
done
dj bm25 --passages $D/heldout/passages.jsonl --questions $D/heldout/questions.jsonl --k 100 --out $W/runs/heldout-bm25.json
ev heldout-bm25
