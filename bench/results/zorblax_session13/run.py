"""run.py TAG DATA JSON_CONFIG: phikit.tune.tune on DATA with the held-out file, then the 29 general questions on
llama.cpp; appends the result line to /tmp/zx/results.txt (``../zorblax_session7/api_run.py``'s run + finish)."""
import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("api_run7", Path(__file__).parents[1] / "zorblax_session7/api_run.py")
api7 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(api7)
tag, data, cfg = sys.argv[1:4]
m, line = api7.run(tag, data, cfg)
api7.finish(tag, m, line)
