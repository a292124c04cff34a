python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
for g in none down all; do
  s=$(date +%s); PHIKIT_GEMV=$g timeout 110 python3 -m phikit bench --random-weights --backends fast --precisions bf16 --batches 1 --prompt-lengths 512 --max-tokens 128 --runs 3 --fast-compile layers --out $OUT/g_$g > $OUT/g_$g.log 2>&1
  echo "$g rc=$? wall=$(( $(date +%s) - s ))s"; grep -E "^\| fast" $OUT/g_$g/*.md | head -2; tail -3 $OUT/g_$g.log | grep -i error
done
PHIKIT_GEMV=all timeout 100 python3 .devrun/prof.py layers $OUT/prof_all.json > $OUT/prof_all.log 2>&1; echo "prof rc=$?"; grep -A6 "top_kernels" $OUT/prof_all.log; grep "us_per_step\|wall_ms" $OUT/prof_all.log
