"""Session-wide test settings, loaded before any test or doctest module is imported.

Triton picks between compiled GPU kernels and its CPU interpreter when a kernel module is
imported, so the choice has to be made before anything imports one: the interpreter, unless
the caller set TRITON_INTERPRET (``TRITON_INTERPRET=0 make test`` on a GPU machine).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
