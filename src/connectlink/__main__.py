import sys

from connectlink.cli import main

sys.exit(main())
