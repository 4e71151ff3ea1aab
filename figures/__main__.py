"""``python -m figures``: render every figure from results/tables."""
import sys

from figures.render import main

sys.exit(main())
