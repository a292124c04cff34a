"""python3 .devrun/phk.py 'PYTHON SETUP' phikit-args...: run setup (e.g. inductor settings), then the phikit CLI."""
import sys
setup = sys.argv.pop(1)
exec(setup)
from phikit.cli import main
main()
