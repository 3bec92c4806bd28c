"""``python -m ssah``: the ``ssah`` command (torchrun runs it as ``torchrun -m ssah.cli`` or ``-m ssah``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
