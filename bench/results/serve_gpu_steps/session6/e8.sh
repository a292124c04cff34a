python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-serve/*.whl .xfer3/*.whl 2>&1 | grep -v "already exists" | tail -2
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl-serve2/*.whl 2>&1 | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site2:/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
old() { python3 -c "import runpy,sys; sys.path.insert(0,'bench'); import phikit.engines.fast.generate as g; g.MIN_BUCKET=1024; sys.argv=sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')" "$@"; }
s=$(date +%s)
timeout 100 python3 bench/batcher_bench.py --random-weights /tmp/phi4r --mode tokens,events --json $OUT/batcher_256.json 2>&1 | grep -v Warn | sed "s/^/min256 /" | tail -3
timeout 100 old bench/batcher_bench.py --random-weights /tmp/phi4r --mode tokens,events --json $OUT/batcher_1024.json 2>&1 | grep -v Warn | sed "s/^/min1024 /" | tail -3
echo "batcher wall $(( $(date +%s) - s ))s"
S="--max-tokens 128 --levels 32,32 --requests 128 --parallel 32 --backend fast --random-weights /tmp/phi4r --modes batched"
s=$(date +%s)
timeout 150 python3 bench/serve_bench.py $S --out /tmp/a.md --json $OUT/serve_256.json 2>&1 | grep "clients\|Error" | sed "s/^/min256 /"
timeout 150 old bench/serve_bench.py $S --out /tmp/b.md --json $OUT/serve_1024.json 2>&1 | grep "clients\|Error" | sed "s/^/min1024 /"
echo "serve wall $(( $(date +%s) - s ))s"
