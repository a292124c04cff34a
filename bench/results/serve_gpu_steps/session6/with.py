"""python3 .devrun/with.py 'PYTHON SETUP' script.py args...: run setup, then the script as __main__."""
import runpy, sys
setup, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
sys.path.insert(0, "bench")
exec(setup)
runpy.run_path(script, run_name="__main__")
