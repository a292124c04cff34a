"""usage: api_run.py TAG DATA JSON_CONFIG  -> appends a result line to /tmp/zx/results.txt
JSON_CONFIG: everything ../zorblax_session10/api_run.py takes ("ortho", ...) plus TuneConfig fields, which now include
"loraplus_ratio" and "preserve". The orlp4* runs were made when LoRA+ was a patch in this script (commit 689a92a);
phikit's own LoRA+ optimizer now does the same, so the config goes through to session 10's script unchanged.
To repeat orlp4 without phikit's own projection on top of session 10's: '{"ortho": 0.95, "loraplus_ratio": 4,
"preserve": 0}' (the same as phikit's defaults, '{}', up to the eigendecomposition's rounding)."""
import runpy, sys
from pathlib import Path
sys.argv = [str(Path(__file__).resolve().parents[1] / "zorblax_session10" / "api_run.py"), *sys.argv[1:4]]
runpy.run_path(sys.argv[0], run_name="__main__")
