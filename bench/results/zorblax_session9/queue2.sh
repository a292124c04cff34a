#!/bin/bash
# runs lines of /tmp/zx/queue.txt one at a time: "TAG DATA JSON" (api_run.py) or "CMD shell command"
cd /work/main
while true; do
  line=$(head -1 /tmp/zx/queue.txt 2>/dev/null)
  [ -z "$line" ] && { sleep 5; [ -f /tmp/zx/stop2 ] && exit 0; continue; }
  sed -i 1d /tmp/zx/queue.txt
  tag=$(echo "$line" | cut -d' ' -f1)
  echo "$(date +%T) start $line" | cut -c1-150 >> /tmp/zx/log.txt
  if [ "$tag" = CMD ]; then bash -c "${line#CMD }" >> /tmp/zx/cmd.log 2>&1
  else data=$(echo "$line" | cut -d' ' -f2); js=$(echo "$line" | cut -d' ' -f3-)
       .venv/bin/python /tmp/zx/api_run.py "$tag" "$data" "$js" > /tmp/zx/$tag.log 2>&1; fi
  echo "$(date +%T) end $tag rc=$?" >> /tmp/zx/log.txt
done
