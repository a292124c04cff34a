python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
for m in layers ops; do timeout 120 python3 .devrun/prof.py $m $OUT/prof_$m.json > $OUT/prof_$m.log 2>&1; echo "prof $m rc=$?"; done
grep -h "us_per_step\|wall_ms\|load_s" $OUT/prof_*.log
s=$(date +%s); timeout 200 python3 -m phikit bench --random-weights --backends fast --precisions bf16,fast:nf4 --batches 1,8,32 --prompt-lengths 512 --max-tokens 128 --runs 2 --fast-compile layers --out $OUT/b32 > $OUT/b32.log 2>&1
echo "b32 rc=$? wall=$(( $(date +%s) - s ))s"; grep -E "^\| fast" $OUT/b32/*.md | head -9; tail -3 $OUT/b32.log | grep -i error
