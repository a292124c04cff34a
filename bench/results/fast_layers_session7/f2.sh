python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
CDT="import torch._inductor.config as c; c.coordinate_descent_tuning=True"
MAG="import torch._inductor.config as c; c.max_autotune_gemm=True"
BOTH="import torch._inductor.config as c; c.max_autotune_gemm=True; c.coordinate_descent_tuning=True"
b() { # tag setup mode precisions
  s=$(date +%s); timeout 110 python3 .devrun/phk.py "$2" bench --random-weights --backends fast --precisions $4 --batches 1 --prompt-lengths 512 --max-tokens 128 --runs 3 --fast-compile $3 --out $OUT/$1 > $OUT/$1.log 2>&1
  echo "$1 rc=$? wall=$(( $(date +%s) - s ))s"; grep -E "^\| fast" $OUT/$1/*.md 2>/dev/null | head -4; tail -3 $OUT/$1.log | grep -i error
}
b layers "pass" layers bf16
b cdt "$CDT" layers bf16
b mag "$MAG" layers bf16
b ops "pass" ops bf16
b int4_cdt "$CDT" layers fast:int4
