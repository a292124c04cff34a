python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-serve/*.whl .xfer3/*.whl 2>&1 | grep -v "already exists" | tail -2
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl-serve2/*.whl 2>&1 | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site2:/tmp/site:$PWD/src
OLD="import phikit.engines.fast.generate as g; g.MIN_BUCKET=1024; import phikit.engines.fast.slots as sl; i=sl.FastBatcher.__init__; sl.FastBatcher.__init__=lambda self,*a,**k: (i(self,*a,**k), setattr(self,'join_by_graphs',False))[0]"
EAGERJOIN="import phikit.engines.fast.slots as sl; i=sl.FastBatcher.__init__; sl.FastBatcher.__init__=lambda self,*a,**k: (i(self,*a,**k), setattr(self,'join_by_graphs',False))[0]"
s=$(date +%s)
for v in NEW OLD; do
  if [ $v = NEW ]; then SET="pass"; else SET="$OLD"; fi
  timeout 100 python3 .devrun/with.py "$SET" bench/batcher_bench.py --random-weights /tmp/phi4r --mode tokens,events --json $OUT/batcher_$v.json 2>&1 | grep -v Warn | grep "tok/s" | sed "s/^/$v /"
done
echo "batcher wall $(( $(date +%s) - s ))s"
S="--max-tokens 128 --levels 32,32 --requests 128 --parallel 32 --backend fast --random-weights /tmp/phi4r --modes batched"
s=$(date +%s)
for v in NEW OLD EAGERJOIN; do
  case $v in NEW) SET=pass;; OLD) SET="$OLD";; EAGERJOIN) SET="$EAGERJOIN";; esac
  timeout 150 python3 .devrun/with.py "$SET" bench/serve_bench.py $S --out /tmp/$v.md --json $OUT/serve_$v.json 2>&1 | grep "clients\|Error" | sed "s/^/$v /"
done
echo "serve wall $(( $(date +%s) - s ))s"
