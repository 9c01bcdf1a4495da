import sys

from avgpool.cli import main

sys.exit(main())
